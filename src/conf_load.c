/*
 * Loading the configuration: the sidecar's file (conf.c), then the
 * nginx.conf (nginx_conf.c), then each issuer's certificates added at
 * run time (conf_cert.c), into one struct conf.  An issuer, certificate or
 * acme_shared_zone defined in both files is an error that names both
 * places.  Then what no one file can judge: the state_path folders
 * (before certificates.conf is read from them), each certificate against
 * its issuer, whatever order they came in, and where the readiness check
 * fetches when nothing said.
 */
#include <sys/types.h>

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar.h"
#include "conf_int.h"

/* Issuers may be defined after the certificates that use them. */
static int
conf_check_certs(struct conf_parse *p)
{
	struct conf_cert	*cc;
	struct conf_issuer	*ci;
	char			*why = NULL;

	TAILQ_FOREACH(cc, &p->conf->c_certs, cc_entry) {
		if ((ci = conf_find_issuer(p->conf, cc->cc_issuer)) == NULL)
			return conf_error_at(p, cc->cc_file, cc->cc_line,
			    "unknown acme_issuer \"%s\"", cc->cc_issuer);
		if (cc->cc_nidents > ci->ci_max_idents)
			return conf_error_at(p, cc->cc_file, cc->cc_line,
			    "%zu identifiers in one certificate: acme_issuer "
			    "\"%s\" takes at most %zu (max_identifiers)",
			    cc->cc_nidents, ci->ci_name, ci->ci_max_idents);
		if (conf_cert_check_challenge(p->conf, cc, ci, &why) == -1) {
			conf_error_at(p, cc->cc_wild_file != NULL ?
			    cc->cc_wild_file : cc->cc_file, cc->cc_wild_file !=
			    NULL ? cc->cc_wild_line : cc->cc_line, "%s", why);
			free(why);
			return -1;
		}
		conf_cert_resolve(cc, ci);
	}
	return 0;
}

/*
 * The uid state_path is read and written as: the "user" when started as
 * root (priv.c drops to it), else the daemon's own.
 */
static uid_t
conf_state_uid(const struct conf *conf)
{
	struct passwd	*pw;

	if (conf->c_user != NULL && geteuid() == 0 &&
	    (pw = getpwnam(conf->c_user)) != NULL)
		return pw->pw_uid;
	return geteuid();
}

/*
 * A state_path that exists must be a folder that no other user controls:
 * whoever does could swap the keys and certificates in it (fsafe.c).  A
 * missing one is made later (priv.c, store.c); the parents it has are
 * judged now.  Before certificates.conf is read from it.
 */
static int
conf_check_state(struct conf_parse *p)
{
	struct conf_issuer	*ci;
	char			*why = NULL;
	uid_t			 uid = conf_state_uid(p->conf);
	int			 fd;

	TAILQ_FOREACH(ci, &p->conf->c_issuers, ci_entry) {
		fd = fsafe_opendir(ci->ci_state_path, 0700, uid, &why);
		if (fd != -1)
			close(fd);
		else if (errno != ENOENT) {
			conf_error_at(p, ci->ci_state_file != NULL ?
			    ci->ci_state_file : ci->ci_file,
			    ci->ci_state_file != NULL ? ci->ci_state_line :
			    ci->ci_line, "state_path refused: %s", why);
			free(why);
			return -1;
		}
		free(why);
		why = NULL;
	}
	return 0;
}

/*
 * Without challenge_check, and with no listen in nginx.conf to take,
 * challenge_listen's address (its port 0: the one bound, which main.c
 * knows), else port 80 of this host.
 */
static void
conf_check_default(struct conf *conf)
{
	const char	*a = conf->c_challenge_addr;

	if (conf->c_check_off || conf->c_check_addr != NULL)
		return;
	if (!conf->c_challenge_off) {
		/* A wildcard listen answers on loopback too. */
		if (strcmp(a, "0.0.0.0") == 0)
			a = "127.0.0.1";
		else if (strcmp(a, "::") == 0)
			a = "::1";
		conf->c_check_addr = xstrdup(a);
		conf->c_check_port = conf->c_challenge_port;
		conf->c_check_from = xstrdup("challenge_listen");
		return;
	}
	conf->c_check_addr = xstrdup("127.0.0.1");
	conf->c_check_port = 80;
	conf->c_check_from = xstrdup("port 80 of this host, as "
	    "challenge_listen is off");
}

struct conf *
conf_load_files(const char *path, const char *nginx, char **cause)
{
	struct conf_parse	 p;
	struct conf		*conf;
	int			 rc = -1;

	memset(&p, 0, sizeof(p));
	*cause = NULL;
	conf = conf_new(path);
	p.conf = conf;
	if (path != NULL && conf_read_top(&p, path) == -1)
		goto out;
	/* --nginx-conf wins over nginx_config. */
	if (nginx != NULL) {
		free(conf->c_nginx_config);
		conf->c_nginx_config = xstrdup(nginx);
		free(p.nginx_file);
		p.nginx_file = NULL;
	}
	if (conf->c_nginx_config != NULL &&
	    nginx_conf_read(&p, conf->c_nginx_config) == -1)
		goto out;
	if (conf_check_state(&p) == -1 || conf_read_runtime(&p) == -1 ||
	    conf_check_certs(&p) == -1)
		goto out;
	conf_check_default(conf);
	rc = 0;
out:
	conf_cert_ids_free(&p);
	free(p.zone_file);
	free(p.nginx_file);
	if (rc == -1) {
		*cause = p.cause;
		conf_free(conf);
		return NULL;
	}
	return conf;
}

struct conf *
conf_load(const char *path, char **cause)
{
	return conf_load_files(path, NULL, cause);
}
