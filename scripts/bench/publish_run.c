/*
 * What one renewal costs the shared zone among N certificates: the
 * writer (src/shm_writer.c, linked in as the daemon has it) publishes N
 * certificates, then renews them one at a time as order.c does (HTTP-01
 * token up, token down, new chain and key), and the zone's own counters
 * say what the renewals' publishes wrote and the CPU they took.
 * scripts/bench/publish builds this against two writers and runs them
 * side by side; see scripts/bench/README.md.
 *
 *	publish_run [-n N] [-r renewals] [-w warm-up renewals] ZONEFILE
 *
 * One line out: "N renewals publishes cert_writes bytes ns used"
 * over the measured renewals, used being the last image's bytes.
 */
#include <sys/stat.h>

#include <err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "sidecar.h"

#define PR_CHAIN	2300	/* bytes of a leaf and an intermediate, PEM */
#define PR_KEY		241	/* bytes of an ECDSA P-256 key, PKCS#8 PEM */
#define PR_ZONE_PER	8192	/* zone bytes per certificate, as shortlived */

/* PEM-looking text of len bytes that names id and version v. */
static char *
pr_pem(const char *what, const char *id, int v, size_t len)
{
	static const char	 b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
	    "ghijklmnopqrstuvwxyz0123456789+/";
	char			*s = xmalloc(len + 1);
	size_t			 i;
	int			 n;

	n = snprintf(s, len + 1, "-----BEGIN %s-----\n%s %d\n", what, id, v);
	for (i = (size_t)n; i < len; i++)
		s[i] = (i - n) % 65 == 64 ? '\n' : b64[random() % 64];
	s[len] = '\0';
	return s;
}

/* Run the loop until the commit delay and the publishes have passed. */
static void
pr_settle(struct event_base *evb)
{
	struct timeval	 tv = { 0, 150 * 1000 };

	event_base_loopexit(evb, &tv);
	event_base_dispatch(evb);
}

static void
pr_set(int i, int v)
{
	char	 id[32], www[40], *names[2] = { id, www }, *chain, *key;

	snprintf(id, sizeof(id), "c%d.bench.test", i);
	snprintf(www, sizeof(www), "www.c%d.bench.test", i);
	chain = pr_pem("CERTIFICATE", id, v, PR_CHAIN);
	key = pr_pem("PRIVATE KEY", id, v, PR_KEY);
	shm_cert_set(id, "bench", names, 2, chain, key, 0, 1);
	free(chain);
	keys_pem_free(key);
}

/* A renewal as order.c makes it: token up, token down, new chain. */
static void
pr_renew(struct event_base *evb, int i, int v)
{
	char	 tok[32];

	snprintf(tok, sizeof(tok), "token-%d-%d", i, v);
	shm_token_add(tok, "keyauthorization.thumbprint");
	pr_settle(evb);
	shm_token_remove(tok);
	pr_settle(evb);
	pr_set(i, v);
	pr_settle(evb);
}

int
main(int argc, char *argv[])
{
	struct event_base	*evb;
	struct shm_stats	 a, b;
	char			*cause = NULL;
	int			 ch, n = 10000, renewals = 10, warm = 2, i;

	while ((ch = getopt(argc, argv, "n:r:w:")) != -1) {
		switch (ch) {
		case 'n':
			n = atoi(optarg);
			break;
		case 'r':
			renewals = atoi(optarg);
			break;
		case 'w':
			warm = atoi(optarg);
			break;
		default:
			errx(2, "usage: publish_run [-n N] [-r renewals] "
			    "[-w warm-up] ZONEFILE");
		}
	}
	if (optind + 1 != argc || n < 1 || renewals < 1 || warm < 0)
		errx(2, "usage: publish_run [-n N] [-r renewals] "
		    "[-w warm-up] ZONEFILE");
	log_init(0);
	srandom(16);
	unlink(argv[optind]);
	if ((evb = event_base_new()) == NULL)
		errx(1, "event_base_new");
	if (shm_open_zone(evb, argv[optind], (size_t)n * PR_ZONE_PER < (1u <<
	    20) ? 1u << 20 : (size_t)n * PR_ZONE_PER, NULL, &cause) == -1)
		errx(1, "%s", cause);
	for (i = 0; i < n; i++)
		pr_set(i, 0);
	pr_settle(evb);
	/* Both slots have been written once: the steady state. */
	for (i = 0; i < warm; i++)
		pr_renew(evb, (i * 7919) % n, 1);
	shm_get_stats(&a);
	for (i = 0; i < renewals; i++)
		pr_renew(evb, ((warm + i) * 7919) % n, 1);
	shm_get_stats(&b);
	if (b.ss_failures != 0 || b.ss_certs != (size_t)n)
		errx(1, "the zone did not take the certificates");
	printf("%d %d %llu %llu %llu %llu %u\n", n, renewals,
	    (unsigned long long)(b.ss_publishes - a.ss_publishes),
	    (unsigned long long)(b.ss_cert_writes - a.ss_cert_writes),
	    (unsigned long long)(b.ss_bytes_written - a.ss_bytes_written),
	    (unsigned long long)(b.ss_publish_ns - a.ss_publish_ns),
	    b.ss_used);
	shm_close();
	unlink(argv[optind]);
	event_base_free(evb);
	return 0;
}
