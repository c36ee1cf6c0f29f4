/*
 * ACME Renewal Information (RFC 9773) for one certificate: ask the CA's
 * renewalInfo when to renew the certificate in use, and renew at a random
 * moment inside the window it suggests.
 *
 * The fetch has a timer and a request of its own, apart from the order's:
 * it runs while the certificate waits for its renewal, and a renewal under
 * way never waits for it.  What the CA said is kept in STATE/ari/ID.json,
 * so a restart neither forgets the window nor asks again before the CA's
 * Retry-After.  A failed fetch leaves the lifetime rule (or the last
 * window) in force and is tried again ARI_RETRY_ERROR later.
 *
 * Several replicas share one renewal time through Redis (order_cluster.c)
 * that the lifetime rule sets; they do not fetch, so that N replicas do
 * not ask the CA N times per Retry-After.  They still send "replaces".
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "sidecar.h"
#include "order.h"

#define ORDER_ARI_WAIT_ISSUER	1	/* seconds: directory not loaded */

static void	 order_ari_fetch(int, short, void *);

void
order_ari_init(struct cert *ce)
{
	if ((ce->ce_ari_timer = evtimer_new(ce->ce_base, order_ari_fetch,
	    ce)) == NULL)
		fatalx("%s: evtimer_new", __func__);
}

void
order_ari_free(struct cert *ce)
{
	if (ce->ce_ari_req != NULL)
		acme_req_cancel(ce->ce_ari_req);
	ce->ce_ari_req = NULL;
	if (ce->ce_ari_timer != NULL)
		event_free(ce->ce_ari_timer);
	ce->ce_ari_timer = NULL;
	ari_state_clear(&ce->ce_ari);
	free(ce->ce_cert_id);
	ce->ce_cert_id = NULL;
}

/*
 * chain is now the certificate in use: learn its CertID, and what a
 * previous run heard of it.  A new certificate starts with no window and
 * is asked about at once.
 */
void
order_ari_adopt(struct cert *ce, const char *chain)
{
	const char	*dir = acme_issuer_state_path(ce->ce_issuer);
	char		*id, *cause = NULL;

	if ((id = ari_cert_id(chain, &cause)) == NULL) {
		log_debug("certificate \"%s\": no CertID (%s): no ARI and no "
		    "\"replaces\"", ce->ce_id, cause);
		free(cause);
	}
	if (id != NULL && ce->ce_cert_id != NULL &&
	    strcmp(id, ce->ce_cert_id) == 0) {
		free(id);
		return;
	}
	if (ce->ce_ari_req != NULL)
		acme_req_cancel(ce->ce_ari_req);
	ce->ce_ari_req = NULL;
	evtimer_del(ce->ce_ari_timer);
	ari_state_clear(&ce->ce_ari);
	free(ce->ce_cert_id);
	ce->ce_cert_id = id;
	if (id == NULL || cluster_enabled())
		return;
	if (store_load_ari(dir, ce->ce_id, &ce->ce_ari, &cause) == -1) {
		log_warnx("certificate \"%s\": %s", ce->ce_id, cause);
		free(cause);
	}
	if (ce->ce_ari.as_cert_id == NULL ||
	    strcmp(ce->ce_ari.as_cert_id, id) != 0) {
		/* Another certificate's: the one it was for is replaced. */
		ari_state_clear(&ce->ce_ari);
		ce->ce_ari.as_cert_id = xstrdup(id);
	}
}

/*
 * The renewal time the CA's window gives, "now" for a window that is
 * past; 0 when there is none, and the lifetime rule decides.
 */
time_t
order_ari_renew_at(const struct cert *ce)
{
	time_t	 now = util_now();

	if (ce->ce_cert_id == NULL || ce->ce_ari.as_end == 0)
		return 0;
	return ce->ce_ari.as_renew_at > now ? ce->ce_ari.as_renew_at : now;
}

/* Fetch when the CA's Retry-After allows, once the issuer is up. */
void
order_ari_arm(struct cert *ce)
{
	struct timeval	 tv;
	time_t		 wait;

	if (ce->ce_cert_id == NULL || cluster_enabled() ||
	    ce->ce_ari_req != NULL)
		return;
	wait = ce->ce_ari.as_next_fetch - util_now();
	tv.tv_sec = wait > 0 ? wait : 0;
	tv.tv_usec = 0;
	evtimer_add(ce->ce_ari_timer, &tv);
}

/* Keep what the CA said for the next run; a failure costs one fetch. */
static void
order_ari_save(struct cert *ce)
{
	char	*cause = NULL;

	if (store_save_ari(acme_issuer_state_path(ce->ce_issuer), ce->ce_id,
	    &ce->ce_ari, &cause) == -1) {
		log_warnx("certificate \"%s\": saving renewalInfo: %s",
		    ce->ce_id, cause);
		free(cause);
	}
}

/* A new window: choose a moment in it, unless the old choice still fits. */
static void
order_ari_window(struct cert *ce, const struct ari_state *got)
{
	struct ari_state	*as = &ce->ce_ari;
	char			 s[UTIL_TIME_LEN], e[UTIL_TIME_LEN];
	char			 at[UTIL_TIME_LEN];

	if (got->as_start != as->as_start || got->as_end != as->as_end ||
	    as->as_renew_at < got->as_start || as->as_renew_at > got->as_end) {
		as->as_start = got->as_start;
		as->as_end = got->as_end;
		as->as_renew_at = ari_pick(as, ce->ce_not_after,
		    util_random_unit());
		util_time_rfc3339(as->as_start, s, sizeof(s));
		util_time_rfc3339(as->as_end, e, sizeof(e));
		util_time_rfc3339(as->as_renew_at, at, sizeof(at));
		log_info("certificate \"%s\": the CA suggests renewing "
		    "between %s and %s; renewal at %s%s", ce->ce_id, s, e, at,
		    as->as_end <= util_now() ? " (past: now)" : "");
	}
	free(as->as_explanation);
	as->as_explanation = got->as_explanation != NULL ?
	    xstrdup(got->as_explanation) : NULL;
	if (as->as_explanation != NULL)
		log_info("certificate \"%s\": the CA explains its renewal "
		    "window at %s", ce->ce_id, as->as_explanation);
}

static void
order_ari_reply(const struct acme_reply *r, void *arg)
{
	struct cert		*ce = arg;
	struct ari_state	 got;
	char			*why = NULL, *desc;

	ce->ce_ari_req = NULL;
	memset(&got, 0, sizeof(got));
	if (r->status == 200 &&
	    ari_parse(r->body, r->len, &got, &why) == 0) {
		order_ari_window(ce, &got);
		ce->ce_ari.as_next_fetch = ari_next_fetch(util_now(),
		    r->retry_after);
	} else {
		if (why == NULL) {
			desc = acme_reply_describe(r);
			xasprintf(&why, "renewalInfo: %s", desc);
			free(desc);
		}
		log_warnx("certificate \"%s\": %s; %s, asking again in %ds",
		    ce->ce_id, why, ce->ce_ari.as_end != 0 ?
		    "keeping the last window" : "renewing by its lifetime",
		    ARI_RETRY_ERROR);
		free(why);
		ce->ce_ari.as_next_fetch = util_now() + ARI_RETRY_ERROR;
	}
	ari_state_clear(&got);
	order_ari_save(ce);
	/* Waiting for the renewal: the window may have moved it. */
	if (ce->ce_state == ORDER_IDLE && ce->ce_have)
		order_schedule_renewal(ce, 0);
	else
		order_ari_arm(ce);
}

static void
order_ari_fetch(int fd, short ev, void *arg)
{
	struct cert		*ce = arg;
	struct timeval		 tv = { ORDER_ARI_WAIT_ISSUER, 0 };

	(void)fd;
	(void)ev;
	if (ce->ce_cert_id == NULL || ce->ce_ari_req != NULL)
		return;
	if (acme_issuer_state(ce->ce_issuer) != ISSUER_READY) {
		evtimer_add(ce->ce_ari_timer, &tv);
		return;
	}
	if (acme_issuer_renewal_info(ce->ce_issuer) == NULL)
		return;		/* no ARI at this CA: the lifetime rule */
	log_debug("certificate \"%s\": asking renewalInfo/%s", ce->ce_id,
	    ce->ce_cert_id);
	ce->ce_ari_req = acme_renewal_info(ce->ce_issuer, ce->ce_cert_id,
	    order_ari_reply, ce);
}
