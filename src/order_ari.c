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
 * Several replicas (order_cluster.c) ask the CA once for the fleet: a
 * fetch is made under the certificate's lease, only when the ARI record
 * in Redis (PREFIX:ari:ID) is due, and what the CA said goes back there,
 * fenced, in place of STATE/ari/ID.json.  The other replicas take that
 * record as it is, the renewal time chosen in the window included, so
 * that every replica shows the same renewal and the first to take the
 * lease when it comes places the one order.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "sidecar.h"
#include "order.h"

#define ORDER_ARI_WAIT_ISSUER	1	/* seconds: directory not loaded */
/*
 * Replicas: Redis away, the record is read again after a lease's life.
 * The lease busy, sooner: its holder's "ari" message usually comes first,
 * but a holder that died mid-fetch is taken over soon after its lease
 * expires.
 */
#define ORDER_ARI_WAIT_LEASE	CLUSTER_LEASE_TTL
#define ORDER_ARI_WAIT_BUSY	CLUSTER_LEASE_RENEW

static void	 order_ari_fetch(int, short, void *);
static void	 order_ari_settled(struct cert *);

void
order_ari_init(struct cert *ce)
{
	if ((ce->ce_ari_timer = evtimer_new(ce->ce_base, order_ari_fetch,
	    ce)) == NULL)
		fatalx("%s: evtimer_new", __func__);
}

/*
 * Stop a fetch under way, and its write to Redis; an order's lease comes
 * first (order_lease()).  The fetch is armed again with the next renewal.
 */
void
order_ari_cancel(struct cert *ce)
{
	if (ce->ce_ari_req != NULL)
		acme_req_cancel(ce->ce_ari_req);
	ce->ce_ari_req = NULL;
	cluster_op_cancel(ce->ce_ari_op);
	ce->ce_ari_op = NULL;
	cluster_lease_release(ce->ce_ari_lease);
	ce->ce_ari_lease = NULL;
}

/* Whether this node holds the certificate's lease for a fetch. */
int
order_ari_busy(const struct cert *ce)
{
	return ce->ce_ari_lease != NULL;
}

void
order_ari_free(struct cert *ce)
{
	order_ari_cancel(ce);
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
 * is asked about at once.  leaf, when not NULL, is chain's first
 * certificate parsed already: the CertID comes from it, unparsed again.
 */
void
order_ari_adopt(struct cert *ce, const char *chain, X509 *leaf)
{
	char	*id, *cause = NULL;

	id = leaf != NULL ? ari_cert_id_x509(leaf, &cause) :
	    ari_cert_id(chain, &cause);
	if (id == NULL) {
		log_debug("certificate \"%s\": no CertID (%s): no ARI and no "
		    "\"replaces\"", ce->ce_id, cause);
		free(cause);
	}
	order_ari_adopt_id(ce, id);
}

/*
 * order_ari_adopt() with the CertID already known (store.c keeps it with
 * the certificate, so a start need not parse it again); takes id, which
 * may be NULL.
 */
void
order_ari_adopt_id(struct cert *ce, char *id)
{
	const char	*dir = acme_issuer_state_path(ce->ce_issuer);
	char		*cause = NULL;

	if (id != NULL && ce->ce_cert_id != NULL &&
	    strcmp(id, ce->ce_cert_id) == 0) {
		free(id);
		return;
	}
	order_ari_cancel(ce);
	evtimer_del(ce->ce_ari_timer);
	ari_state_clear(&ce->ce_ari);
	free(ce->ce_cert_id);
	ce->ce_cert_id = id;
	if (id == NULL)
		return;
	/* Replicas: Redis's record, read under the lease before a fetch. */
	if (!cluster_enabled() &&
	    store_load_ari(dir, ce->ce_id, &ce->ce_ari, &cause) == -1) {
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

	if (ce->ce_cert_id == NULL || ce->ce_ari_req != NULL ||
	    ce->ce_ari_lease != NULL)
		return;
	wait = ce->ce_ari.as_next_fetch - util_now();
	tv.tv_sec = wait > 0 ? wait : 0;
	tv.tv_usec = 0;
	evtimer_add(ce->ce_ari_timer, &tv);
}

/* Ask again after delay seconds, jittered: replicas that wait together
 * should not come back together. */
static void
order_ari_later(struct cert *ce, double delay)
{
	struct timeval	 tv;

	delay = util_jitter(delay, 0.2);
	tv.tv_sec = (time_t)delay;
	tv.tv_usec = (suseconds_t)((delay - (double)tv.tv_sec) * 1e6);
	evtimer_add(ce->ce_ari_timer, &tv);
}

/* Keep what the CA said for the next run; a failure costs one fetch. */
static void
order_ari_save(struct cert *ce)
{
	char	*cause = NULL;

	if (cluster_enabled())
		return;		/* Redis keeps it: order_ari_share() */
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
		as->as_renew_at = ari_pick(as, ce->ce_not_after, util_now(),
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

/*
 * What the CA said is in ce_ari: renew by it if it gave a window, and ask
 * again when it allows.  Without a window the renewal time stays as it
 * is (the lifetime rule, or the fleet's time from Redis).
 */
static void
order_ari_settled(struct cert *ce)
{
	if (ce->ce_state == ORDER_IDLE && ce->ce_have &&
	    order_ari_renew_at(ce) != 0)
		order_schedule_renewal(ce, 0);
	else
		order_ari_arm(ce);
}

static void
order_ari_lease_end(struct cert *ce)
{
	cluster_lease_release(ce->ce_ari_lease);
	ce->ce_ari_lease = NULL;
}

static void
order_ari_shared_done(int rc, void *arg)
{
	struct cert	*ce = arg;

	ce->ce_ari_op = NULL;
	order_ari_lease_end(ce);
	if (rc == 0) {
		log_warnx("certificate \"%s\": another node holds a newer "
		    "lease; its renewalInfo answer is the fleet's, not this "
		    "node's", ce->ce_id);
		order_cluster_sync(ce);
	} else if (rc == -1)
		log_warnx("certificate \"%s\": Redis did not take the "
		    "renewalInfo answer; the other replicas may ask again",
		    ce->ce_id);
	order_ari_settled(ce);
}

/* Replicas: the answer goes to Redis before this node acts on it. */
static void
order_ari_share(struct cert *ce)
{
	if ((ce->ce_ari_op = cluster_put_ari(ce->ce_ari_lease, &ce->ce_ari,
	    order_ari_shared_done, ce)) == NULL)
		order_ari_shared_done(-1, ce);
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
	if (ce->ce_ari_lease != NULL) {
		order_ari_share(ce);
		return;
	}
	order_ari_save(ce);
	order_ari_settled(ce);
}

static void
order_ari_ask(struct cert *ce)
{
	log_debug("certificate \"%s\": asking renewalInfo/%s", ce->ce_id,
	    ce->ce_cert_id);
	ce->ce_ari_req = acme_renewal_info(ce->ce_issuer, ce->ce_cert_id,
	    order_ari_reply, ce);
}

/*
 * Another replica's answer, from Redis: taken as it is, so that every
 * replica renews at the same moment.  A record of another certificate
 * (the one this one replaced, or one not taken from Redis yet) is not
 * this certificate's.
 */
void
order_ari_shared(struct cert *ce, const struct ari_state *rec)
{
	struct ari_state	*as = &ce->ce_ari;
	char			 s[UTIL_TIME_LEN], e[UTIL_TIME_LEN];
	char			 at[UTIL_TIME_LEN];
	int			 changed;

	if (ce->ce_cert_id == NULL || rec->as_cert_id == NULL ||
	    strcmp(rec->as_cert_id, ce->ce_cert_id) != 0 ||
	    ce->ce_ari_lease != NULL)
		return;
	changed = as->as_start != rec->as_start || as->as_end != rec->as_end ||
	    as->as_renew_at != rec->as_renew_at;
	as->as_start = rec->as_start;
	as->as_end = rec->as_end;
	as->as_renew_at = rec->as_renew_at;
	as->as_next_fetch = rec->as_next_fetch;
	free(as->as_explanation);
	as->as_explanation = rec->as_explanation != NULL ?
	    xstrdup(rec->as_explanation) : NULL;
	if (changed && as->as_end != 0) {
		util_time_rfc3339(as->as_start, s, sizeof(s));
		util_time_rfc3339(as->as_end, e, sizeof(e));
		util_time_rfc3339(as->as_renew_at, at, sizeof(at));
		log_info("certificate \"%s\": the fleet's renewalInfo: "
		    "between %s and %s; renewal at %s%s", ce->ce_id, s, e, at,
		    as->as_end <= util_now() ? " (past: now)" : "");
	}
	if (changed)
		order_ari_settled(ce);
	else
		order_ari_arm(ce);
}

/*
 * Replicas, under the lease: Redis's record first.  Another node asked
 * already if it holds this certificate's answer and is not due; and a
 * node that has not taken the fleet's newer certificate yet does not ask
 * about its old one.
 */
static void
order_ari_read(int rc, struct cluster_rec *order, struct cluster_rec *cert,
    struct ari_state *ari, void *arg)
{
	struct cert	*ce = arg;
	unsigned char	 md[32];

	(void)order;
	ce->ce_ari_op = NULL;
	if (rc == -1) {
		order_ari_lease_end(ce);
		order_ari_later(ce, ORDER_ARI_WAIT_LEASE);
		return;
	}
	if (cert != NULL) {
		order_chain_digest(cert->cr_chain, md);
		if (memcmp(md, ce->ce_chain_md, sizeof(md)) != 0) {
			order_ari_lease_end(ce);
			order_ari_later(ce, ORDER_ARI_WAIT_LEASE);
			order_cluster_sync(ce);
			return;
		}
	}
	if (ari != NULL && ce->ce_cert_id != NULL &&
	    strcmp(ari->as_cert_id, ce->ce_cert_id) == 0 &&
	    ari->as_next_fetch > util_now()) {
		order_ari_lease_end(ce);
		order_ari_shared(ce, ari);
		return;
	}
	order_ari_ask(ce);
}

static void
order_ari_leased(enum cluster_lease_event ev, void *arg)
{
	struct cert	*ce = arg;

	switch (ev) {
	case LEASE_GRANTED:
		if ((ce->ce_ari_op = cluster_get_state(ce->ce_id,
		    order_ari_read, ce)) == NULL) {
			order_ari_lease_end(ce);
			order_ari_later(ce, ORDER_ARI_WAIT_LEASE);
		}
		break;
	case LEASE_BUSY:
		order_ari_lease_end(ce);
		order_ari_later(ce, ORDER_ARI_WAIT_BUSY);
		break;
	case LEASE_UNAVAILABLE:
		order_ari_lease_end(ce);
		order_ari_later(ce, ORDER_ARI_WAIT_LEASE);
		break;
	case LEASE_LOST:	/* the fence refuses the write, if any */
		break;
	}
}

/*
 * Replicas: the fetch takes the certificate's lease, which an order under
 * way holds already; that order's certificate is asked about next.
 */
static void
order_ari_lease(struct cert *ce)
{
	if (ce->ce_state != ORDER_IDLE || ce->ce_lease != NULL ||
	    ce->ce_restore_lease != NULL) {
		order_ari_later(ce, ORDER_ARI_WAIT_LEASE);
		return;
	}
	if ((ce->ce_ari_lease = cluster_lease_take(ce->ce_id,
	    order_ari_leased, ce)) == NULL)
		order_ari_later(ce, ORDER_ARI_WAIT_LEASE);
}

static void
order_ari_fetch(int fd, short ev, void *arg)
{
	struct cert		*ce = arg;
	struct timeval		 tv = { ORDER_ARI_WAIT_ISSUER, 0 };

	(void)fd;
	(void)ev;
	if (ce->ce_cert_id == NULL || ce->ce_ari_req != NULL ||
	    ce->ce_ari_lease != NULL)
		return;
	if (acme_issuer_state(ce->ce_issuer) != ISSUER_READY) {
		evtimer_add(ce->ce_ari_timer, &tv);
		return;
	}
	if (acme_issuer_renewal_info(ce->ce_issuer) == NULL)
		return;		/* no ARI at this CA: the lifetime rule */
	if (cluster_enabled())
		order_ari_lease(ce);
	else
		order_ari_ask(ce);
}
