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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "sidecar.h"

static struct conf	*main_conf;
static const char	*main_conf_path = SIDECAR_DEFAULT_CONF;

static __dead void
main_usage(void)
{
	fprintf(stderr, "usage: acme-sidecar [-tvV] [-c file]\n");
	exit(2);
}

/* nginx -t's two lines, so operators read what they already know. */
static int
main_test_conf(const char *path)
{
	struct conf	*conf;
	char		*cause = NULL;

	if ((conf = conf_load(path, &cause)) == NULL) {
		fprintf(stderr, "acme-sidecar: %s\n", cause);
		fprintf(stderr, "acme-sidecar: configuration file %s test "
		    "failed\n", path);
		free(cause);
		return 1;
	}
	conf_free(conf);
	fprintf(stderr, "acme-sidecar: the configuration file %s syntax is "
	    "ok\n", path);
	fprintf(stderr, "acme-sidecar: configuration file %s test is "
	    "successful\n", path);
	return 0;
}

static void
main_reload(void)
{
	struct conf	*conf;
	char		*cause = NULL;

	log_info("reloading %s", main_conf_path);
	if ((conf = conf_load(main_conf_path, &cause)) == NULL) {
		log_warnx("reload refused, keeping the running configuration: "
		    "%s", cause);
		free(cause);
		return;
	}
	if (conf->c_challenge_port != main_conf->c_challenge_port ||
	    strcmp(conf->c_challenge_addr, main_conf->c_challenge_addr) != 0)
		log_warnx("challenge_listen changed; it takes effect after a "
		    "restart");
	sched_apply(conf);
	conf_free(main_conf);
	main_conf = conf;
}

static void
main_signal(int sig, short ev, void *arg)
{
	struct event_base	*base = arg;

	(void)ev;
	switch (sig) {
	case SIGHUP:
		main_reload();
		break;
	case SIGTERM:
	case SIGINT:
		log_info("%s received, exiting", strsignal(sig));
		event_base_loopbreak(base);
		break;
	}
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
		{ "version",	no_argument,	NULL, 'V' },
		{ NULL,		0,		NULL, 0 }
	};
	struct event_base	*base;
	struct evdns_base	*dns;
	struct event		*sig_hup, *sig_term, *sig_int;
	char			*cause = NULL;
	int			 ch, test = 0, verbose = 0;

	while ((ch = getopt_long(argc, argv, "c:htvV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			main_conf_path = optarg;
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
	if (test)
		return main_test_conf(main_conf_path);

	log_init(verbose);
	if ((main_conf = conf_load(main_conf_path, &cause)) == NULL)
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
	sched_init(base, dns);
	sched_apply(main_conf);
	event_base_dispatch(base);

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
