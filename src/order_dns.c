/*
 * dns-01 for one certificate's order (RFC 8555 8.4): the TXT record
 * "_acme-challenge.NAME." holding base64url(SHA-256(key authorization)),
 * published through the issuer's dns_hook or dns_update (dns_publish.c)
 * before the CA is told to
 * validate, and removed once the authorization settles (valid or not),
 * or when the order fails, is abandoned or is freed.
 *
 * A wildcard's authorization names the domain without "*." (RFC 8555
 * 7.1.3), so "*.example.com" and "example.com" share one record name;
 * either publisher runs its jobs one at a time, so the first one's "del"
 * reaches the DNS before the second one's "add".  The removal is fire and
 * forget: its failure is logged, the order does not wait for it.
 *
 * A record outlives a crash, or a "del" that failed: each one is noted
 * in state_path (store.c, STATE/dns-01) before its "add" runs, and the
 * note goes once its "del" succeeded.  At start, order_dns_sweep() runs
 * "del" for every note left, retrying with a growing delay until the
 * hook succeeds; nothing waits for it.
 */
#include <sys/queue.h>

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "sidecar.h"
#include "order.h"

#define ORDER_DNS_RETRY_FIRST	5	/* seconds, doubled after each failure */
#define ORDER_DNS_RETRY_MAX	600

struct order_dns {
	char			*od_fqdn;	/* "_acme-challenge.NAME." */
	char			*od_value;
	struct dns_publish_job	 od_add;	/* in flight, or zeroes */
};

/* How the CA validates the certificate's identifiers (GET /v1/...). */
enum challenge_type
order_cert_challenge(const struct cert *ce)
{
	return ce->ce_challenge;
}

/* The TXT record's text for a key authorization; the caller frees. */
char *
order_dns_txt(const char *keyauth)
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0;

	if (EVP_Digest(keyauth, strlen(keyauth), md, &mdlen, EVP_sha256(),
	    NULL) != 1)
		fatalx("%s: EVP_Digest", __func__);
	return b64url_encode(md, mdlen);
}

/* The record's name for an authorization's identifier; the caller frees. */
char *
order_dns_fqdn(const char *ident)
{
	char	*fqdn;

	if (strncmp(ident, "*.", 2) == 0)
		ident += 2;
	xasprintf(&fqdn, "_acme-challenge.%s.", ident);
	return fqdn;
}

/*
 * A "del" and what follows it: the note removed once it succeeded; at
 * start (retry), the hook run again later when it failed.
 */
struct order_dns_removal {
	struct event_base	*or_base;
	char			*or_dir;	/* state_path, with the note */
	char			*or_hook;	/* the publisher, as in */
	int			 or_timeout;	/* struct dns_publisher */
	char			*or_update;
	char			*or_fqdn;
	char			*or_value;
	int			 or_retry;
	int			 or_delay;	/* seconds before the next */
	struct event		*or_timer;
	TAILQ_ENTRY(order_dns_removal) or_entry;
};

static TAILQ_HEAD(, order_dns_removal) order_dns_removals =
    TAILQ_HEAD_INITIALIZER(order_dns_removals);

static void	order_dns_remove_run(struct order_dns_removal *);

static void
order_dns_removal_free(struct order_dns_removal *or)
{
	TAILQ_REMOVE(&order_dns_removals, or, or_entry);
	if (or->or_timer != NULL)
		event_free(or->or_timer);
	free(or->or_dir);
	free(or->or_hook);
	free(or->or_update);
	free(or->or_fqdn);
	free(or->or_value);
	free(or);
}

static void
order_dns_retry_cb(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	order_dns_remove_run(arg);
}

static void
order_dns_removed(int rc, const char *why, void *arg)
{
	struct order_dns_removal	*or = arg;
	struct timeval			 tv = { 0, 0 };

	if (rc == 0) {
		store_remove_dns_record(or->or_dir, or->or_value);
		log_info("TXT %s \"%s\" removed", or->or_fqdn, or->or_value);
		order_dns_removal_free(or);
		return;
	}
	if (!or->or_retry) {
		log_warnx("%s: TXT %s stays noted in %s/dns-01: the next start "
		    "removes it", why, or->or_fqdn, or->or_dir);
		order_dns_removal_free(or);
		return;
	}
	log_warnx("%s: removing the TXT %s left over again in %ds", why,
	    or->or_fqdn, or->or_delay);
	if (or->or_timer == NULL &&
	    (or->or_timer = evtimer_new(or->or_base, order_dns_retry_cb,
	    or)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	tv.tv_sec = or->or_delay;
	evtimer_add(or->or_timer, &tv);
	or->or_delay = or->or_delay * 2 > ORDER_DNS_RETRY_MAX ?
	    ORDER_DNS_RETRY_MAX : or->or_delay * 2;
}

static void
order_dns_remove_run(struct order_dns_removal *or)
{
	struct dns_publisher	dp = { or->or_hook, or->or_timeout,
				    or->or_update };

	dns_publish_run(or->or_base, &dp, "del", or->or_fqdn, or->or_value,
	    order_dns_removed, or);
}

/* "del" the record; its note in dir goes once that succeeded. */
static void
order_dns_remove(struct event_base *base, const char *dir,
    const struct dns_publisher *dp, const char *fqdn, const char *value,
    int retry)
{
	struct order_dns_removal	*or;

	or = xcalloc(1, sizeof(*or));
	or->or_base = base;
	or->or_dir = xstrdup(dir);
	or->or_hook = dp->dp_hook != NULL ? xstrdup(dp->dp_hook) : NULL;
	or->or_timeout = dp->dp_hook_timeout;
	or->or_update = dp->dp_update != NULL ? xstrdup(dp->dp_update) :
	    NULL;
	or->or_fqdn = xstrdup(fqdn);
	or->or_value = xstrdup(value);
	or->or_retry = retry;
	or->or_delay = ORDER_DNS_RETRY_FIRST;
	TAILQ_INSERT_TAIL(&order_dns_removals, or, or_entry);
	order_dns_remove_run(or);
}

/*
 * Note the record before its "add" runs.  A note that cannot be written
 * costs only the removal after a crash: the order goes on, with a warning.
 */
static void
order_dns_note(struct cert *ce, const struct order_dns *od)
{
	char	*cause = NULL;

	if (store_save_dns_record(acme_issuer_state_path(ce->ce_issuer),
	    od->od_fqdn, od->od_value, &cause) == -1) {
		log_warnx("certificate \"%s\": %s: a crash before its removal "
		    "would leave TXT %s behind", ce->ce_id, cause,
		    od->od_fqdn);
		free(cause);
	}
}

/*
 * At start: remove the records a crash (or a failed "del") left behind,
 * as noted in the issuer's state_path.
 */
void
order_dns_sweep(struct event_base *base, const struct conf_issuer *ci)
{
	struct store_dns_record	*recs = NULL;
	size_t			 n = 0, i;
	char			*cause = NULL;
	struct dns_publisher	 dp = { ci->ci_dns_hook, ci->ci_dns_hook_timeout,
				    ci->ci_dns_update };

	if (store_load_dns_records(ci->ci_state_path, &recs, &n,
	    &cause) == -1) {
		log_warnx("acme_issuer \"%s\": %s", ci->ci_name, cause);
		free(cause);
		return;
	}
	for (i = 0; i < n; i++) {
		if (dp.dp_hook == NULL && dp.dp_update == NULL) {
			log_warnx("acme_issuer \"%s\": TXT %s \"%s\" was left "
			    "behind, and the issuer has no dns_hook or "
			    "dns_update now: "
			    "remove it by hand, and %s/dns-01/%s.json",
			    ci->ci_name, recs[i].sd_fqdn, recs[i].sd_value,
			    ci->ci_state_path, recs[i].sd_value);
			continue;
		}
		log_info("acme_issuer \"%s\": removing TXT %s \"%s\", left "
		    "behind by an earlier run", ci->ci_name, recs[i].sd_fqdn,
		    recs[i].sd_value);
		order_dns_remove(base, ci->ci_state_path, &dp,
		    recs[i].sd_fqdn, recs[i].sd_value, 1);
	}
	store_dns_records_free(recs, n);
}

/*
 * At exit, after dns_hook_shutdown() and dns_update_shutdown(): no
 * callback can come any more.
 */
void
order_dns_shutdown(void)
{
	struct order_dns_removal	*or;

	while ((or = TAILQ_FIRST(&order_dns_removals)) != NULL)
		order_dns_removal_free(or);
}

static void
order_dns_added(int rc, const char *why, void *arg)
{
	struct cert	*ce = arg;

	memset(&ce->ce_dns->od_add, 0, sizeof(ce->ce_dns->od_add));
	order_dns_published(ce, rc, why);
}

/*
 * Publish the record for ident's authorization; order_dns_published()
 * follows, never before this returns.  A record still published for an
 * earlier authorization is removed first.
 */
void
order_dns_present(struct cert *ce, const char *ident, const char *keyauth)
{
	struct order_dns	*od;
	struct dns_publisher	 dp = { ce->ce_dns_hook, ce->ce_dns_hook_timeout,
				    ce->ce_dns_update };

	/* conf_cert_check_challenge() refuses dns-01 without either. */
	if (dp.dp_hook == NULL && dp.dp_update == NULL)
		fatalx("%s: certificate \"%s\" has no dns_hook or dns_update",
		    __func__, ce->ce_id);
	order_dns_clear(ce);
	od = xcalloc(1, sizeof(*od));
	od->od_fqdn = order_dns_fqdn(ident);
	od->od_value = order_dns_txt(keyauth);
	ce->ce_dns = od;
	order_dns_note(ce, od);
	log_info("certificate \"%s\": publishing TXT %s \"%s\"", ce->ce_id,
	    od->od_fqdn, od->od_value);
	od->od_add = dns_publish_run(ce->ce_base, &dp, "add", od->od_fqdn,
	    od->od_value, order_dns_added, ce);
}

/* The record published for the authorization at hand, or NULL. */
const char *
order_dns_name(const struct cert *ce)
{
	return ce->ce_dns != NULL ? ce->ce_dns->od_fqdn : NULL;
}

const char *
order_dns_value(const struct cert *ce)
{
	return ce->ce_dns != NULL ? ce->ce_dns->od_value : NULL;
}

/* Remove the record, if one was asked for; the order goes on at once. */
void
order_dns_clear(struct cert *ce)
{
	struct order_dns	*od = ce->ce_dns;
	struct dns_publisher	 dp = { ce->ce_dns_hook, ce->ce_dns_hook_timeout,
				    ce->ce_dns_update };

	if (od == NULL)
		return;
	ce->ce_dns = NULL;
	/* Its "add" still runs; the "del" is queued after it. */
	dns_publish_forget(&od->od_add);
	log_info("certificate \"%s\": removing TXT %s", ce->ce_id,
	    od->od_fqdn);
	order_dns_remove(ce->ce_base, acme_issuer_state_path(ce->ce_issuer),
	    &dp, od->od_fqdn, od->od_value, 0);
	free(od->od_fqdn);
	free(od->od_value);
	free(od);
}
