/*
 * acme-sidecar: keeps the configured certificates issued and renewed.
 *
 * Runs in the foreground, logs to stderr.  SIGHUP reloads the
 * configuration (a bad one is refused and the running one kept); SIGTERM
 * and SIGINT stop the loop.  Every state file is written atomically, so a
 * stop at any moment leaves no half-written file.
 */
#include <errno.h>
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

#define MAIN_OPT_NGINX_CONF	256		/* long option only */

static __dead void
main_usage(void)
{
	fprintf(stderr, "usage: acme-sidecar [-tvV] [-c file] "
	    "[--nginx-conf file]\n");
	exit(2);
}

/* nginx -t's lines, one per file, so operators read what they know. */
static int
main_test_conf(void)
{
	struct conf	*conf;
	const char	*files[2];
	char		*cause = NULL;
	int		 i;

	conf = conf_load_files(main_conf_path, main_nginx_path, &cause);
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
	if (conf == NULL) {
		log_warnx("reload refused, keeping the running configuration: "
		    "%s", *cause);
		return -1;
	}
	if (conf->c_challenge_port != main_conf->c_challenge_port ||
	    strcmp(conf->c_challenge_addr, main_conf->c_challenge_addr) != 0)
		log_warnx("challenge_listen changed; it takes effect after a "
		    "restart");
	/* nginx maps the segment: it moves only with a restart. */
	if (strcmp(conf->c_zone_path, main_conf->c_zone_path) != 0 ||
	    conf->c_zone_size != main_conf->c_zone_size)
		log_warnx("acme_shared_zone changed; it takes effect after a "
		    "restart");
	if (strcmp(conf->c_control_socket, main_conf->c_control_socket) != 0)
		log_warnx("control_socket changed; it takes effect after a "
		    "restart");
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
 * POST /v1/certificates: checked as its configuration line would be,
 * saved, then started.  Nothing changes unless it is saved.
 */
static enum control_result
main_cert_add(const char *issuer, char *const *idents, size_t n,
    const char *key, const char **id, char **cause)
{
	struct conf_cert	*cc;
	char			*why = NULL;

	switch (conf_runtime_add(main_conf, issuer, idents, n, key, cause)) {
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
	log_info("certificate \"%s\": added through the control socket, "
	    "saved in %s", cc->cc_id, cc->cc_file);
	feed_emit("added", "{s:s, s:s}", "certificate", cc->cc_id, "issuer",
	    issuer);
	sched_add_cert(cc);
	*id = cc->cc_id;
	return CONTROL_OK;
}

/* DELETE /v1/certificates/{id}: only what the API added. */
static enum control_result
main_cert_remove(const char *id, char **cause)
{
	struct conf_cert	*cc, *prev;
	struct conf_issuer	*ci;
	char			*why = NULL;

	TAILQ_FOREACH(cc, &main_conf->c_certs, cc_entry)
		if (strcmp(cc->cc_id, id) == 0)
			break;
	if (cc == NULL) {
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
		free(conf_runtime_text(main_conf, ci));	/* lines back */
		return CONTROL_FAILED;
	}
	log_info("certificate \"%s\": deleted through the control socket",
	    id);
	feed_emit("deleted", "{s:s, s:s}", "certificate", id, "issuer",
	    cc->cc_issuer);
	sched_drop_cert(id);
	conf_cert_free(cc);
	return CONTROL_OK;
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
/* nginx's readers refuse a file not owned by owner= (root by default). */
static void
main_zone_owner_check(void)
{
	const char	*owner = main_conf->c_zone_owner;
	struct passwd	*pw;
	uid_t		 want = 0;

	if (owner != NULL && strspn(owner, "0123456789") == strlen(owner))
		want = (uid_t)strtoul(owner, NULL, 10);
	else if (owner != NULL && (pw = getpwnam(owner)) != NULL)
		want = pw->pw_uid;
	if (geteuid() != want)
		log_warnx("shared zone %s: nginx expects it owned by %s, but "
		    "this daemon runs as uid %u: nginx will refuse it (set "
		    "owner= in acme_shared_zone)", main_conf->c_zone_path,
		    owner != NULL ? owner : "root", (unsigned)geteuid());
}

static void
main_zone_open(struct event_base *base)
{
	const char	*group;
	char		*cause = NULL;

	if ((group = main_conf->c_zone_group) == NULL &&
	    (group = main_conf->c_nginx_group) == NULL &&
	    getgrnam("www-data") != NULL)
		group = "www-data";
	if (shm_open_zone(base, main_conf->c_zone_path,
	    main_conf->c_zone_size, group, &cause) == -1)
		fatalx("acme_shared_zone: %s", cause);
	log_info("shared zone %s: group %s", main_conf->c_zone_path,
	    group != NULL ? group : "unchanged");
	main_zone_owner_check();
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
		default:
			main_usage();
		}
	}
	if (optind != argc)
		main_usage();
	/* With --nginx-conf alone, the sidecar's directives are defaults. */
	if (main_conf_path == NULL && main_nginx_path == NULL)
		main_conf_path = SIDECAR_DEFAULT_CONF;
	if (test)
		return main_test_conf();

	log_init(verbose);
	main_conf = conf_load_files(main_conf_path, main_nginx_path, &cause);
	if (main_conf == NULL)
		fatalx("%s", cause);
	signal(SIGPIPE, SIG_IGN);

	if ((base = event_base_new()) == NULL)
		fatalx("event_base_new");
	dns = main_dns(base);
	if (challenge_start(base, main_conf->c_challenge_addr,
	    main_conf->c_challenge_port, &cause) == -1)
		fatalx("%s", cause);
	log_info("acme-sidecar %s: answering HTTP-01 on %s:%d",
	    SIDECAR_VERSION, main_conf->c_challenge_addr, challenge_port());

	sig_hup = evsignal_new(base, SIGHUP, main_signal, base);
	sig_term = evsignal_new(base, SIGTERM, main_signal, base);
	sig_int = evsignal_new(base, SIGINT, main_signal, base);
	if (sig_hup == NULL || sig_term == NULL || sig_int == NULL)
		fatalx("evsignal_new");
	evsignal_add(sig_hup, NULL);
	evsignal_add(sig_term, NULL);
	evsignal_add(sig_int, NULL);

	if (writer_start(base, &cause) == -1)
		fatalx("%s", cause);
	main_zone_open(base);
	/*
	 * The control socket before the first orders: a path that cannot be
	 * bound stops the daemon before it has asked the CA for anything.
	 * No request is served before the loop runs, after sched_apply().
	 */
	if (control_start(base, main_conf->c_control_socket,
	    main_conf->c_control_group, &hooks, &cause) == -1)
		fatalx("%s", cause);
	sched_init(base, dns);
	sched_apply(main_conf);
	event_base_dispatch(base);

	control_stop();
	/* Before the certificates go: nginx keeps serving the last image. */
	shm_close();
	sched_shutdown();
	writer_stop();
	challenge_stop();
	event_free(sig_hup);
	event_free(sig_term);
	event_free(sig_int);
	evdns_base_free(dns, 0);
	event_base_free(base);
	conf_free(main_conf);
	return 0;
}
