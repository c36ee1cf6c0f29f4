/*
 * acme-sidecar: keeps the configured certificates issued and renewed.
 *
 * Runs in the foreground, logs to stderr.  SIGHUP reloads the
 * configuration (a bad one is refused and the running one kept); SIGTERM
 * and SIGINT stop the loop.  Every state file is written atomically, so a
 * stop at any moment leaves no half-written file.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "sidecar.h"

static struct conf	*main_conf;
static const char	*main_conf_path;	/* -c; NULL: --nginx-conf only */
static const char	*main_nginx_path;	/* --nginx-conf */
static struct priv_user	 main_user;		/* once dropped to it */
static int		 main_dropped;
static struct conf_cluster *main_cluster;	/* for the run, or NULL */

#define MAIN_OPT_NGINX_CONF	256		/* long option only */

static __dead void
main_usage(int status)
{
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: acme-sidecar [-htvV] [-c file] "
	    "[--nginx-conf file]\n");
	if (status == 0)
		fprintf(f, "  -c file              the configuration (default "
		    SIDECAR_DEFAULT_CONF ")\n"
		    "  --nginx-conf file    take the acme_* directives from "
		    "nginx's configuration\n"
		    "  -t                   test the configuration and exit\n"
		    "  -v                   log debug messages too\n"
		    "  -h, --help           this help\n"
		    "  -V, --version        the version\n"
		    "See acme-sidecar(8) and acme-sidecar.conf(5).\n");
	exit(status);
}

/* The "user" directive's ids; pu is cleared either way. */
static int
main_user_lookup(const struct conf *conf, struct priv_user *pu, char **cause)
{
	char	*why = NULL;

	memset(pu, 0, sizeof(*pu));
	if (conf->c_user == NULL)
		return 0;
	if (priv_lookup(conf->c_user, conf->c_group, pu, &why) == -1) {
		xasprintf(cause, "%s: %s", conf->c_file != NULL ?
		    conf->c_file : "user", why);
		free(why);
		return -1;
	}
	return 0;
}

/*
 * After the drop, all the daemon reads and writes is read and written as
 * the user: an issuer's state_path (a new one is created now, so a folder
 * the user cannot create is said at once), its account_key and its
 * ssl_trusted_certificate.
 */
static int
main_issuer_usable(const struct conf_issuer *ci, char **cause)
{
	if (access(ci->ci_state_path, F_OK) == -1 &&
	    store_init(ci->ci_state_path, cause) == -1)
		return -1;
	if (priv_state_check(ci->ci_state_path, &main_user, cause) == -1)
		return -1;
	if (ci->ci_account_key_file != NULL && priv_readable("account_key",
	    ci->ci_account_key_file, &main_user, cause) == -1)
		return -1;
	if (ci->ci_trusted_cert != NULL && priv_readable(
	    "ssl_trusted_certificate", ci->ci_trusted_cert, &main_user,
	    cause) == -1)
		return -1;
	return 0;
}

/* -1 with the first issuer the user could not serve in cause. */
static int
main_user_check(const struct conf *conf, char **cause)
{
	struct conf_issuer	*ci;
	char			*why = NULL;

	TAILQ_FOREACH(ci, &conf->c_issuers, ci_entry) {
		if (main_issuer_usable(ci, &why) == -1) {
			xasprintf(cause, "acme_issuer \"%s\" (%s:%d): %s",
			    ci->ci_name, ci->ci_file, ci->ci_line, why);
			free(why);
			return -1;
		}
	}
	return 0;
}

/* SIGHUP re-reads the files as the user: say now if it cannot. */
static void
main_conf_readable(void)
{
	const char	*files[3];
	int		 i;

	files[0] = main_conf_path;
	files[1] = main_nginx_path;
	files[2] = main_conf->c_nginx_config;
	for (i = 0; i < 3; i++) {
		if (files[i] != NULL && access(files[i], R_OK) == -1)
			log_warnx("%s: %s as user %s: a reload (SIGHUP) will "
			    "fail until the user can read it", files[i],
			    strerror(errno), main_user.pu_user);
	}
}

/* nginx -t's lines, one per file, so operators read what they know. */
static int
main_test_conf(void)
{
	struct priv_user pu;
	struct conf	*conf;
	const char	*files[2];
	char		*cause = NULL;
	int		 i;

	memset(&pu, 0, sizeof(pu));
	conf = conf_load_files(main_conf_path, main_nginx_path, &cause);
	if (conf != NULL && main_user_lookup(conf, &pu, &cause) == -1) {
		conf_free(conf);
		conf = NULL;
	}
	priv_user_clear(&pu);
	if (conf == NULL) {
		fprintf(stderr, "acme-sidecar: %s\n", cause);
		fprintf(stderr, "acme-sidecar: configuration file %s test "
		    "failed\n", main_conf_path != NULL ? main_conf_path :
		    main_nginx_path);
		free(cause);
		return 1;
	}
	files[0] = main_conf_path;
	files[1] = conf->c_nginx_config;
	for (i = 0; i < 2; i++) {
		if (files[i] != NULL)
			fprintf(stderr, "acme-sidecar: the configuration file "
			    "%s syntax is ok\n", files[i]);
	}
	for (i = 0; i < 2; i++) {
		if (files[i] != NULL)
			fprintf(stderr, "acme-sidecar: configuration file %s "
			    "test is successful\n", files[i]);
	}
	conf_free(conf);
	return 0;
}

static int
main_str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Whether a reloaded "cluster" is the one running (secret included). */
static int
main_cluster_same(const struct conf_cluster *a)
{
	const struct conf_cluster *b = main_cluster;

	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a->cl_url, b->cl_url) == 0 &&
	    strcmp(a->cl_prefix, b->cl_prefix) == 0 &&
	    strcmp(a->cl_node, b->cl_node) == 0 &&
	    main_str_eq(a->cl_user, b->cl_user) &&
	    main_str_eq(a->cl_password, b->cl_password) &&
	    memcmp(a->cl_key, b->cl_key, sizeof(a->cl_key)) == 0;
}

/*
 * Where the readiness check fetches challenges (ready.c).  challenge_listen
 * with port 0 is checked on the port it was given when bound.
 */
static void
main_ready_configure(const struct conf *conf)
{
	int	 port = conf->c_check_port;

	if (conf->c_check_off) {
		ready_configure(NULL, 0, 0, NULL);
		return;
	}
	if (port == 0 && strcmp(conf->c_check_from, "challenge_listen") == 0)
		port = challenge_port();
	ready_configure(conf->c_check_addr, port, conf->c_check_limit,
	    conf->c_check_from);
	/* tls-alpn-01 through nginx's module, unless we answer it ourselves. */
	if (alpn_running())
		return;
	if (conf->c_tls_check_addr != NULL)
		ready_configure_tls(conf->c_tls_check_addr,
		    conf->c_tls_check_port, conf->c_tls_check_from);
	else
		ready_configure_tls("127.0.0.1", 443, "port 443 of this host, "
		    "as no ssl listen was found in an nginx.conf");
}

/* tls_alpn_listen: the tls-alpn-01 responder, off unless configured. */
static void
main_alpn_start(struct event_base *base, const struct conf *conf)
{
	char	*cause = NULL;

	if (conf->c_alpn_addr == NULL)
		return;
	if (alpn_start(base, conf->c_alpn_addr, conf->c_alpn_port,
	    &cause) == -1)
		fatalx("%s", cause);
	log_info("acme-sidecar %s: answering tls-alpn-01 on %s:%d",
	    SIDECAR_VERSION, conf->c_alpn_addr, alpn_port());
	ready_configure_tls(conf->c_alpn_addr, alpn_port(),
	    "tls_alpn_listen");
}

/*
 * SIGHUP and POST /v1/reload.  -1 with cause (the caller frees) when the
 * new configuration is refused and the running one kept.
 */
static int
main_reload(char **cause)
{
	struct conf	*conf;

	if (main_conf_path != NULL && main_nginx_path != NULL)
		log_info("reloading %s and %s", main_conf_path,
		    main_nginx_path);
	else
		log_info("reloading %s", main_conf_path != NULL ?
		    main_conf_path : main_nginx_path);
	conf = conf_load_files(main_conf_path, main_nginx_path, cause);
	if (conf != NULL && main_dropped && main_user_check(conf, cause) ==
	    -1) {
		conf_free(conf);
		conf = NULL;
	}
	if (conf == NULL) {
		log_warnx("reload refused, keeping the running configuration: "
		    "%s%s%s", *cause, main_dropped ? "; read as user " : "",
		    main_dropped ? main_user.pu_user : "");
		return -1;
	}
	if (conf->c_challenge_port != main_conf->c_challenge_port ||
	    conf->c_challenge_off != main_conf->c_challenge_off ||
	    strcmp(conf->c_challenge_addr, main_conf->c_challenge_addr) != 0)
		log_warnx("challenge_listen changed; it takes effect after a "
		    "restart");
	if (conf->c_alpn_port != main_conf->c_alpn_port ||
	    (conf->c_alpn_addr == NULL) != (main_conf->c_alpn_addr == NULL) ||
	    (conf->c_alpn_addr != NULL &&
	    strcmp(conf->c_alpn_addr, main_conf->c_alpn_addr) != 0))
		log_warnx("tls_alpn_listen changed; it takes effect after a "
		    "restart");
	main_ready_configure(conf);
	/* nginx maps the segment: it moves only with a restart. */
	if (strcmp(conf->c_zone_path, main_conf->c_zone_path) != 0 ||
	    conf->c_zone_size != main_conf->c_zone_size)
		log_warnx("acme_shared_zone changed; it takes effect after a "
		    "restart");
	if (strcmp(conf->c_control_socket, main_conf->c_control_socket) != 0)
		log_warnx("control_socket changed; it takes effect after a "
		    "restart");
	if (!main_str_eq(conf->c_user, main_conf->c_user) ||
	    !main_str_eq(conf->c_group, main_conf->c_group))
		log_warnx("user changed; it takes effect after a restart");
	if (!main_cluster_same(conf->c_cluster))
		log_warnx("cluster changed; it takes effect after a restart");
	sched_apply(conf);
	conf_free(main_conf);
	main_conf = conf;
	return 0;
}

/* Write issuer's certificates.conf from main_conf, atomically. */
static int
main_runtime_save(const struct conf_issuer *ci, char **cause)
{
	char	*text, *path;
	int	 rc = -1;

	text = conf_runtime_text(main_conf, ci);
	path = conf_runtime_path(ci);
	if (store_init(ci->ci_state_path, cause) == 0 &&
	    store_write_atomic(path, text, strlen(text), 0600, cause) == 0)
		rc = 0;
	free(path);
	free(text);
	return rc;
}

/*
 * Add a certificate as its configuration line would be: checked, saved,
 * then started.  Nothing changes unless it is saved.  how says where it
 * came from, for the log.
 */
static enum control_result
main_runtime_add(const char *issuer, char *const *idents, size_t n,
    const char *key, const char *profile, const char *challenge,
    const char *how, struct conf_cert **added, char **cause)
{
	struct conf_cert	*cc;
	char			*why = NULL;

	/* Configured but not running (its set-up failed): nothing to save. */
	if (conf_find_issuer(main_conf, issuer) != NULL &&
	    sched_find_issuer(issuer) == NULL) {
		xasprintf(cause, "issuer \"%s\" is not running: see the log",
		    issuer);
		return CONTROL_INVALID;
	}
	switch (conf_runtime_add(main_conf, issuer, idents, n, key, profile,
	    challenge, cause)) {
	case CONF_ADD_INVALID:
		return CONTROL_INVALID;
	case CONF_ADD_DUPLICATE:
		return CONTROL_CONFLICT;
	}
	cc = TAILQ_LAST(&main_conf->c_certs, conf_certs);
	if (main_runtime_save(conf_find_issuer(main_conf, issuer), &why) ==
	    -1) {
		xasprintf(cause, "certificate \"%s\" not added: %s", cc->cc_id,
		    why);
		free(why);
		TAILQ_REMOVE(&main_conf->c_certs, cc, cc_entry);
		conf_cert_free(cc);
		return CONTROL_FAILED;
	}
	log_info("certificate \"%s\": added %s, saved in %s", cc->cc_id, how,
	    cc->cc_file);
	feed_emit("added", "{s:s, s:s}", "certificate", cc->cc_id, "issuer",
	    issuer);
	sched_add_cert(cc);
	*added = cc;
	return CONTROL_OK;
}

static struct conf_cert *
main_find_cert(const char *id)
{
	struct conf_cert	*cc;

	TAILQ_FOREACH(cc, &main_conf->c_certs, cc_entry)
		if (strcmp(cc->cc_id, id) == 0)
			return cc;
	return NULL;
}

/* Delete a certificate the API added (here or on another node). */
static enum control_result
main_runtime_remove(const char *id, const char *how, char **cause)
{
	struct conf_cert	*cc, *prev;
	struct conf_issuer	*ci;
	char			*why = NULL;

	if ((cc = main_find_cert(id)) == NULL) {
		xasprintf(cause, "no certificate \"%s\"", id);
		return CONTROL_NOT_FOUND;
	}
	if (!cc->cc_runtime) {
		xasprintf(cause, "certificate \"%s\" is defined at %s:%d: "
		    "remove it there, then reload", id, cc->cc_file,
		    cc->cc_line);
		return CONTROL_CONFLICT;
	}
	ci = conf_find_issuer(main_conf, cc->cc_issuer);
	prev = TAILQ_PREV(cc, conf_certs, cc_entry);
	TAILQ_REMOVE(&main_conf->c_certs, cc, cc_entry);
	if (main_runtime_save(ci, &why) == -1) {
		xasprintf(cause, "certificate \"%s\" not deleted: %s", id, why);
		free(why);
		if (prev != NULL)
			TAILQ_INSERT_AFTER(&main_conf->c_certs, prev, cc,
			    cc_entry);
		else
			TAILQ_INSERT_HEAD(&main_conf->c_certs, cc, cc_entry);
		conf_runtime_renumber(main_conf, ci);
		return CONTROL_FAILED;
	}
	log_info("certificate \"%s\": deleted %s", id, how);
	feed_emit("deleted", "{s:s, s:s}", "certificate", id, "issuer",
	    cc->cc_issuer);
	sched_drop_cert(id);
	/* An order it left half done must not come back with a new add. */
	if (ci != NULL)
		store_remove_pending(ci->ci_state_path, id);
	conf_cert_free(cc);
	return CONTROL_OK;
}

/* With a cluster, a change the other nodes cannot learn of is refused. */
static int
main_fleet_unreachable(char **cause)
{
	if (main_cluster == NULL || cluster_up())
		return 0;
	xasprintf(cause, "Redis is out of reach, so the other nodes would "
	    "not learn of this change; nothing was changed, try again once "
	    "GET /v1/status shows the cluster connected");
	return 1;
}

/* POST /v1/certificates. */
static enum control_result
main_cert_add(const char *issuer, char *const *idents, size_t n,
    const char *key, const char *profile, const char *challenge,
    const char **id, char **cause)
{
	struct conf_cert	*cc;
	enum control_result	 rc;

	if (main_fleet_unreachable(cause))
		return CONTROL_UNAVAILABLE;
	rc = main_runtime_add(issuer, idents, n, key, profile, challenge,
	    "through the control socket", &cc, cause);
	if (rc != CONTROL_OK)
		return rc;
	if (main_cluster != NULL)
		cluster_runtime_put(cc);
	*id = cc->cc_id;
	return CONTROL_OK;
}

/* DELETE /v1/certificates/{id}: only what the API added. */
static enum control_result
main_cert_remove(const char *id, char **cause)
{
	enum control_result	 rc;

	if (main_fleet_unreachable(cause))
		return CONTROL_UNAVAILABLE;
	rc = main_runtime_remove(id, "through the control socket", cause);
	if (rc == CONTROL_OK && main_cluster != NULL)
		cluster_runtime_del(id);
	return rc;
}

/*
 * The fleet's API certificates (PREFIX:runtime) against this node's.  A
 * change of this node's still on its way to Redis is left alone.
 */
static const struct cluster_runtime *
main_fleet_runtime_find(const struct cluster_runtime *set, size_t n,
    const char *id)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (strcmp(set[i].cr_id, id) == 0)
			return &set[i];
	return NULL;
}

/* Deleted elsewhere: deleted here.  Missing from Redis: it lost it. */
static void
main_fleet_runtime_mine(const struct cluster_runtime *set, size_t n)
{
	const struct cluster_runtime	*cr;
	struct conf_cert		*cc, *next;
	char				*cause = NULL;

	for (cc = TAILQ_FIRST(&main_conf->c_certs); cc != NULL; cc = next) {
		next = TAILQ_NEXT(cc, cc_entry);
		if (!cc->cc_runtime || cluster_runtime_pending(cc->cc_id))
			continue;
		if ((cr = main_fleet_runtime_find(set, n, cc->cc_id)) == NULL) {
			log_info("cluster: certificate \"%s\": Redis had lost "
			    "it; stored there again", cc->cc_id);
			cluster_runtime_put(cc);
		} else if (cr->cr_deleted && main_runtime_remove(cc->cc_id,
		    "on another node", &cause) != CONTROL_OK) {
			log_warnx("cluster: %s", cause);
			free(cause);
			cause = NULL;
		}
	}
}

static void
main_fleet_runtime_add(const struct cluster_runtime *cr)
{
	struct conf_cert	*cc;
	char			*cause = NULL;

	if (cr->cr_deleted || main_find_cert(cr->cr_id) != NULL ||
	    cluster_runtime_pending(cr->cr_id))
		return;
	if (main_runtime_add(cr->cr_issuer, cr->cr_idents, cr->cr_nidents,
	    cr->cr_key, cr->cr_profile, cr->cr_challenge, "on another node",
	    &cc, &cause) != CONTROL_OK) {
		log_warnx("cluster: the API certificate \"%.64s\" of another "
		    "node: ignored: %s", cr->cr_id, cause);
		free(cause);
		return;
	}
	if (strcmp(cc->cc_id, cr->cr_id) != 0) {
		log_warnx("cluster: the API certificate \"%.64s\" of another "
		    "node is \"%s\" here; ignored", cr->cr_id, cc->cc_id);
		main_runtime_remove(cc->cc_id, "again", &cause);
		free(cause);
	}
}

static void
main_fleet_runtime(const struct cluster_runtime *set, size_t n, void *arg)
{
	size_t	 i;

	(void)arg;
	main_fleet_runtime_mine(set, n);
	for (i = 0; i < n; i++)
		main_fleet_runtime_add(&set[i]);
}

static void
main_fleet_runtime_changed(void)
{
	cluster_runtime_fetch(main_fleet_runtime, NULL);
}

static void
main_fleet_up(void)
{
	cluster_runtime_resend();
	cluster_runtime_fetch(main_fleet_runtime, NULL);
	sched_cluster_up();
}

static void
main_signal(int sig, short ev, void *arg)
{
	struct event_base	*base = arg;
	char			*cause = NULL;

	(void)ev;
	switch (sig) {
	case SIGHUP:
		main_reload(&cause);	/* a refusal is logged */
		free(cause);
		break;
	case SIGTERM:
	case SIGINT:
		log_info("%s received, exiting", strsignal(sig));
		event_base_loopbreak(base);
		break;
	}
}

/*
 * The segment nginx reads.  Its group is the nginx workers': the one
 * acme_shared_zone names, else the group of nginx's "user" directive,
 * else Debian's www-data when it exists.
 */
/*
 * nginx's readers refuse a file not owned by owner= (root by default).
 * The file is the uid's that opened it: with "user", root's, since the
 * zone is opened before the drop and stays root's (the open descriptor
 * and the mapping keep writing it as the user).
 */
static void
main_zone_owner_check(void)
{
	const char	*owner = main_conf->c_zone_owner;
	struct passwd	*pw;
	struct stat	 st;
	uid_t		 want = 0;

	if (owner != NULL && strspn(owner, "0123456789") == strlen(owner))
		want = (uid_t)strtoul(owner, NULL, 10);
	else if (owner != NULL && (pw = getpwnam(owner)) != NULL)
		want = pw->pw_uid;
	if (stat(main_conf->c_zone_path, &st) == -1)
		fatal("%s", main_conf->c_zone_path);
	if (st.st_uid != want)
		log_warnx("shared zone %s: nginx expects it owned by %s, but "
		    "it is owned by uid %u%s: nginx will refuse it (set "
		    "owner= in acme_shared_zone)", main_conf->c_zone_path,
		    owner != NULL ? owner : "root", (unsigned)st.st_uid,
		    main_conf->c_user != NULL && geteuid() == 0 ?
		    ", who opens it before the daemon becomes its user" : "");
}

/*
 * group=GID: shm_open_zone() takes a group's name, and a pod's fsGroup
 * need not have one in this image.  The file it has just opened (ours,
 * 0640, locked) takes the gid here.  Our lock on it, which this second
 * descriptor cannot take, shows that the name still leads to our file.
 */
static void
main_zone_chgrp(gid_t gid)
{
	const char	*path = main_conf->c_zone_path;
	struct stat	 st;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_NOCTTY | O_CLOEXEC)) == -1)
		fatal("acme_shared_zone: %s", path);
	if (fstat(fd, &st) == -1)
		fatal("acme_shared_zone: %s", path);
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
		fatalx("acme_shared_zone: %s is no longer the zone opened",
		    path);
	if (fchown(fd, (uid_t)-1, gid) == -1)
		fatal("acme_shared_zone: %s: group %u", path, (unsigned)gid);
	close(fd);
}

static void
main_zone_open(struct event_base *base)
{
	const char	*group;
	char		*cause = NULL;
	gid_t		 gid;

	if ((group = main_conf->c_zone_group) == NULL &&
	    (group = main_conf->c_nginx_group) == NULL &&
	    getgrnam("www-data") != NULL)
		group = "www-data";
	gid = group != NULL ? conf_gid(group) : (gid_t)-1;
	if (shm_open_zone(base, main_conf->c_zone_path,
	    main_conf->c_zone_size, gid == (gid_t)-1 ? group : NULL,
	    &cause) == -1)
		fatalx("acme_shared_zone: %s", cause);
	if (gid != (gid_t)-1)
		main_zone_chgrp(gid);
	log_info("shared zone %s: group %s", main_conf->c_zone_path,
	    group != NULL ? group : "unchanged");
	main_zone_owner_check();
	zone_readers_check(main_conf->c_zone_path, main_conf->c_nginx_user,
	    main_conf->c_nginx_group, main_conf->c_nginx_user_from);
}

/*
 * The control socket's group: group=, else the daemon's group, which with
 * "user" is the user's (as if the user had bound it), not root's.
 */
static const char *
main_control_group(void)
{
	if (main_conf->c_control_group != NULL)
		return main_conf->c_control_group;
	if (main_conf->c_user != NULL && geteuid() == 0 &&
	    getgrnam(main_user.pu_group) != NULL)
		return main_user.pu_group;
	return NULL;
}

/*
 * control.c lets root and the daemon's own uid change things: after the
 * drop that uid is the user's, so the socket becomes the user's too.
 */
static void
main_control_chown(void)
{
	if (fchownat(AT_FDCWD, main_conf->c_control_socket, main_user.pu_uid,
	    (gid_t)-1, AT_SYMLINK_NOFOLLOW) == -1)
		fatal("control_socket %s: chown", main_conf->c_control_socket);
}

/*
 * "user": after every bind and open that needs root, before any thread
 * and before the first order.  nginx's rule when not root: warn, go on.
 */
static void
main_drop(void)
{
	struct conf_issuer	*ci;
	const char		*dir;
	char			*cause = NULL;

	if (main_conf->c_user == NULL)
		return;
	if (geteuid() != 0) {
		if (geteuid() != main_user.pu_uid)
			log_warnx("\"user %s\" ignored: running as uid %u, "
			    "not root", main_user.pu_user,
			    (unsigned)geteuid());
		return;
	}
	main_control_chown();
	/* Ours, made by mkdtemp(3) a moment ago: the user must remove it. */
	if ((dir = conf_volatile_dir()) != NULL &&
	    chown(dir, main_user.pu_uid, main_user.pu_gid) == -1)
		fatal("state_path off: chown %s", dir);
	TAILQ_FOREACH(ci, &main_conf->c_issuers, ci_entry) {
		if (priv_state_prepare(ci->ci_state_path, &main_user,
		    &cause) == -1)
			fatalx("acme_issuer \"%s\": %s", ci->ci_name, cause);
	}
	if (priv_drop(&main_user, &cause) == -1)
		fatalx("user %s: %s", main_user.pu_user, cause);
	main_dropped = 1;
	log_info("running as user %s (uid %u), group %s (gid %u)",
	    main_user.pu_user, (unsigned)main_user.pu_uid,
	    main_user.pu_group, (unsigned)main_user.pu_gid);
	if (main_user_check(main_conf, &cause) == -1)
		fatalx("%s", cause);
	main_conf_readable();
}

/*
 * "cluster": the link to Redis starts before the first order, so that no
 * order starts without a lease.  It keeps the directive it started with:
 * a reload that changes it only says so.
 */
static void
main_cluster_start(struct event_base *base, struct evdns_base *dns)
{
	static const struct cluster_sync_hooks hooks = {
		main_fleet_up, sched_cluster_cert, main_fleet_runtime_changed
	};

	if (main_conf->c_cluster == NULL)
		return;
	main_cluster = main_conf->c_cluster;
	main_conf->c_cluster = NULL;
	cluster_sync_start(base, dns, main_cluster, &hooks);
}

/*
 * Two priorities, so that the control API can go ahead of order work
 * (loop_mhd_urgent()); everything else takes the default, the lower.  A
 * turn of the loop runs at most 2 ms of that work before it looks for
 * new events again: a request then waits for that, not for all that was
 * ready at once (with 10,000 certificates ordering, hundreds of ms).  It
 * waits that long at each refill of its socket's buffer too: a 5.7 MB
 * list takes about 28 of 208 KB.
 */
static struct event_base *
main_base_new(void)
{
	struct event_config	*cfg;
	struct event_base	*base;
	struct timeval		 slice = { 0, 2000 };

	if ((cfg = event_config_new()) == NULL ||
	    event_config_set_max_dispatch_interval(cfg, &slice, -1, 1) == -1)
		fatalx("event_config");
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (base == NULL)
		fatalx("event_base_new");
	if (event_base_priority_init(base, LOOP_NPRIORITIES) == -1)
		fatalx("event_base_priority_init");
	return base;
}

static struct evdns_base *
main_dns(struct event_base *base)
{
	struct evdns_base	*dns;

	dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (dns == NULL) {
		log_warnx("no usable /etc/resolv.conf; only IP addresses and "
		    "/etc/hosts names will resolve");
		if ((dns = evdns_base_new(base, 0)) == NULL)
			fatalx("evdns_base_new");
	}
	return dns;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "help",	no_argument,	NULL, 'h' },
		{ "nginx-conf",	required_argument, NULL, MAIN_OPT_NGINX_CONF },
		{ "version",	no_argument,	NULL, 'V' },
		{ NULL,		0,		NULL, 0 }
	};
	struct event_base	*base;
	struct evdns_base	*dns;
	static const struct control_hooks hooks = {
		main_reload, main_cert_add, main_cert_remove
	};
	struct event		*sig_hup, *sig_term, *sig_int;
	struct conf_issuer	*ci;
	sigset_t		 sigs, oldsigs;
	char			*cause = NULL;
	int			 ch, test = 0, verbose = 0;

	while ((ch = getopt_long(argc, argv, "c:htvV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			main_conf_path = optarg;
			break;
		case MAIN_OPT_NGINX_CONF:
			main_nginx_path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'V':
			printf("acme-sidecar %s\n", SIDECAR_VERSION);
			return 0;
		case 'h':
			main_usage(0);
		default:
			main_usage(2);
		}
	}
	if (optind != argc)
		main_usage(2);
	/* With --nginx-conf alone, the sidecar's directives are defaults. */
	if (main_conf_path == NULL && main_nginx_path == NULL)
		main_conf_path = SIDECAR_DEFAULT_CONF;
	if (test)
		return main_test_conf();

	log_init(verbose);
	/*
	 * A SIGTERM before libevent handles it would kill the daemon by its
	 * default action: hold the signals until then, they arrive after.
	 */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigprocmask(SIG_BLOCK, &sigs, &oldsigs);
	main_conf = conf_load_files(main_conf_path, main_nginx_path, &cause);
	if (main_conf == NULL)
		fatalx("%s", cause);
	/* An unknown user stops the daemon before it binds anything. */
	if (main_user_lookup(main_conf, &main_user, &cause) == -1)
		fatalx("%s", cause);
	signal(SIGPIPE, SIG_IGN);

	base = main_base_new();
	dns = main_dns(base);
	/*
	 * The zone before the challenge port: a start that fails on a file
	 * at the zone's path (a restart included) must not have bound the
	 * port, since freeing it on the way out lets another process take it.
	 */
	main_zone_open(base);
	if (main_conf->c_challenge_off)
		log_info("acme-sidecar %s: challenge_listen off: nginx answers "
		    "HTTP-01 from the shared zone", SIDECAR_VERSION);
	else if (challenge_start(base, main_conf->c_challenge_addr,
	    main_conf->c_challenge_port, &cause) == -1)
		fatalx("%s", cause);
	else
		log_info("acme-sidecar %s: answering HTTP-01 on %s:%d",
		    SIDECAR_VERSION, main_conf->c_challenge_addr,
		    challenge_port());
	main_alpn_start(base, main_conf);
	main_ready_configure(main_conf);

	sig_hup = evsignal_new(base, SIGHUP, main_signal, base);
	sig_term = evsignal_new(base, SIGTERM, main_signal, base);
	sig_int = evsignal_new(base, SIGINT, main_signal, base);
	if (sig_hup == NULL || sig_term == NULL || sig_int == NULL)
		fatalx("evsignal_new");
	evsignal_add(sig_hup, NULL);
	evsignal_add(sig_term, NULL);
	evsignal_add(sig_int, NULL);
	sigprocmask(SIG_SETMASK, &oldsigs, NULL);

	/*
	 * The control socket before the first orders: a path that cannot be
	 * bound stops the daemon before it has asked the CA for anything.
	 * No request is served before the loop runs, after sched_apply().
	 */
	if (control_start(base, main_conf->c_control_socket,
	    main_control_group(), &hooks, &cause) == -1)
		fatalx("%s", cause);
	main_drop();
	/* After the drop: a thread of root's is never needed. */
	if (writer_start(base, &cause) == -1)
		fatalx("%s", cause);
	sched_init(base, dns);
	main_cluster_start(base, dns);
	/* Before the first order's "add": hooks run in the order asked. */
	TAILQ_FOREACH(ci, &main_conf->c_issuers, ci_entry)
		order_dns_sweep(base, ci);
	sched_apply(main_conf);
	event_base_dispatch(base);

	control_stop();
	/* Before the certificates go: nginx keeps serving the last image. */
	shm_close();
	sched_shutdown();
	/* After the orders: it names the records their end left behind. */
	dns_hook_shutdown();
	dns_update_shutdown();
	order_dns_shutdown();
	cluster_sync_stop();
	cluster_runtime_forget();
	conf_cluster_free(main_cluster);
	writer_stop();
	challenge_stop();
	alpn_stop();
	event_free(sig_hup);
	event_free(sig_term);
	event_free(sig_int);
	/*
	 * A connection to a CA may still wait for its name: libevent holds
	 * its bufferevent (and TLS state) for the lookup.  Fail the lookups,
	 * and let the loop run their callbacks once, which free them.
	 */
	evdns_base_free(dns, 1);
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	conf_free(main_conf);
	priv_user_clear(&main_user);
	return 0;
}
