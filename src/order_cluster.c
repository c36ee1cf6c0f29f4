/*
 * One certificate's orders when several replicas share it (the "cluster"
 * directive, cluster_sync.c).  order.c's machine gains three states:
 *
 *   LEASE  taking the certificate's lease, then reading what Redis holds:
 *          an order another node finalized is resumed, a certificate
 *          another node renewed is taken as it is, and only otherwise is
 *          a new order placed.  A busy lease, or Redis out of reach, waits
 *          here and tries again: no order starts without the lease.
 *   SYNC   the challenge token is published and every live replica has
 *          to acknowledge it before the CA is told to validate.
 *   SHARE  a fenced write: the order before its finalize (so another node
 *          can resume it), or the certificate before it is stored (so that
 *          a node that slept past its lease keeps nothing of its own).
 *
 * The lease is kept through backoffs, renewed by cluster_sync.c, and
 * given back once the certificate is stored or found done by another.
 * Certificates other nodes store, and the ARI records (order_ari.c), reach
 * every node through order_cluster_sync(): at each (re)connection and on
 * each "cert" or "ari" message.  A renewal time from the CA's window comes
 * before the one the certificate's record holds (the lifetime rule).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "sidecar.h"
#include "order.h"

/* Redis away: try the lease again after 2 s, doubling up to 30 s. */
#define ORDER_LEASE_RETRY_MIN	2
#define ORDER_LEASE_RETRY_MAX	30
/* Redis did not take a ready order: 1+2+4+8+16 s of tries, then fail. */
#define ORDER_SHARE_ORDER_TRIES	5

static void	 order_lease_granted(struct cert *);
static void	 order_adopt(struct cert *, const struct cluster_rec *);
static void	 order_cluster_fetch(struct cert *);
static void	 order_restore_end(struct cert *);

/* Renew at the fleet's ARI time if there is one, else at the record's. */
static void
order_cluster_schedule(struct cert *ce, time_t rec_renew_at)
{
	order_schedule_renewal(ce, order_ari_renew_at(ce) != 0 ? 0 :
	    rec_renew_at);
}

/* Wait in LEASE, without a lease, and try again after delay. */
static void
order_lease_later(struct cert *ce, double delay)
{
	cluster_lease_release(ce->ce_lease);
	ce->ce_lease = NULL;
	order_set_state(ce, ORDER_LEASE);
	order_arm(ce, util_jitter(delay, 0.2));
}

static void
order_lease_unreachable(struct cert *ce)
{
	double	 delay;
	int	 n = ce->ce_lease_tries > 4 ? 4 : ce->ce_lease_tries;

	ce->ce_lease_tries++;
	delay = (double)ORDER_LEASE_RETRY_MIN * (double)(1 << n);
	if (delay > ORDER_LEASE_RETRY_MAX)
		delay = ORDER_LEASE_RETRY_MAX;
	log_debug("certificate \"%s\": no lease (%s); no order without it, "
	    "trying again in %.0fs", ce->ce_id, cluster_lease_refusal(), delay);
	order_lease_later(ce, delay);
}

/*
 * The lease went to another node (this one slept past it, or Redis lost
 * it): what this node was doing stops, and the newer holder's work wins.
 */
static void
order_lease_lost(struct cert *ce)
{
	cluster_lease_release(ce->ce_lease);
	ce->ce_lease = NULL;
	/* A write already accepted by Redis: let the local copy finish. */
	if (ce->ce_state == ORDER_STORE)
		return;
	order_reset(ce);
	if (ce->ce_have && order_renew_time(ce->ce_not_before,
	    ce->ce_not_after, 0) > util_now())
		order_schedule_renewal(ce, 0);
	else
		order_lease_later(ce, CLUSTER_LEASE_TTL);
	order_cluster_fetch(ce);
}

static void
order_leased(enum cluster_lease_event ev, void *arg)
{
	struct cert	*ce = arg;

	switch (ev) {
	case LEASE_GRANTED:
		ce->ce_lease_tries = 0;
		order_lease_granted(ce);
		break;
	case LEASE_BUSY:
		/* The holder's "cert" message usually comes first. */
		order_lease_later(ce, CLUSTER_LEASE_TTL);
		break;
	case LEASE_UNAVAILABLE:
		order_lease_unreachable(ce);
		break;
	case LEASE_LOST:
		order_lease_lost(ce);
		break;
	}
}

/* Take the lease (or keep the one held), then see what Redis holds. */
void
order_lease(struct cert *ce)
{
	evtimer_del(ce->ce_timer);
	order_restore_end(ce);	/* an order's lease comes first */
	order_ari_cancel(ce);
	order_set_state(ce, ORDER_LEASE);
	if (cluster_lease_held(ce->ce_lease)) {
		order_lease_granted(ce);
		return;
	}
	cluster_lease_release(ce->ce_lease);
	if ((ce->ce_lease = cluster_lease_take(ce->ce_id, order_leased,
	    ce)) == NULL)
		order_lease_unreachable(ce);
}

/* Resume the order another node finalized: its key is in the record. */
static void
order_resume_shared(struct cert *ce, struct cluster_rec *order)
{
	log_info("certificate \"%s\": resuming order %s, finalized by node "
	    "\"%s\"", ce->ce_id, order->cr_url, order->cr_node);
	ce->ce_order_url = order->cr_url;
	order->cr_url = NULL;
	ce->ce_new_key = order->cr_key;
	order->cr_key = NULL;
	ce->ce_resumed = 1;
	ce->ce_order_shared = 1;
	order_set_state(ce, ORDER_ORDER_POLL);
	feed_emit("order", "{s:s, s:s, s:b, s:b}", "certificate", ce->ce_id,
	    "issuer", acme_issuer_name(ce->ce_issuer), "renewal", ce->ce_have,
	    "resumed", 1);
	order_drive(ce);
}

/*
 * When the record's certificate is due: the CA's window decides for the
 * one this node serves, when it gave one; the record's time otherwise.
 */
static time_t
order_rec_renew_at(const struct cert *ce, const struct cluster_rec *cert)
{
	unsigned char	 md[32];

	order_chain_digest(cert->cr_chain, md);
	if (ce->ce_have && memcmp(md, ce->ce_chain_md, sizeof(md)) == 0 &&
	    order_ari_renew_at(ce) != 0)
		return order_ari_renew_at(ce);
	return cert->cr_renew_at;
}

/* A certificate record for ce, valid and not yet due. */
static int
order_rec_current(const struct cert *ce, const struct cluster_rec *cert)
{
	return cert != NULL && strcmp(cert->cr_issuer,
	    acme_issuer_name(ce->ce_issuer)) == 0 &&
	    order_idents_match(ce, cert->cr_idents, cert->cr_nidents,
	    cert->cr_key_type) && cert->cr_not_after > util_now() &&
	    order_rec_renew_at(ce, cert) > util_now();
}

static void
order_lease_state(int rc, struct cluster_rec *order, struct cluster_rec *cert,
    struct ari_state *ari, void *arg)
{
	struct cert	*ce = arg;
	int		 asked = ce->ce_renew_asked;	/* a new one, then */

	ce->ce_op = NULL;
	if (rc == -1) {
		order_lease_unreachable(ce);
		return;
	}
	ce->ce_renew_asked = 0;
	if (ari != NULL)
		order_ari_shared(ce, ari);
	if (order != NULL && strcmp(order->cr_issuer,
	    acme_issuer_name(ce->ce_issuer)) == 0 &&
	    order_idents_match(ce, order->cr_idents, order->cr_nidents,
	    ce->ce_key)) {
		order_resume_shared(ce, order);
		return;
	}
	if (!asked && order_rec_current(ce, cert)) {
		order_adopt(ce, cert);
		if (ari != NULL)
			order_ari_shared(ce, ari);
		if (ce->ce_state == ORDER_LEASE) {
			order_cluster_done(ce);
			order_cluster_schedule(ce, cert->cr_renew_at);
		}
		return;
	}
	order_begin_new(ce);
}

static void
order_lease_granted(struct cert *ce)
{
	if ((ce->ce_op = cluster_get_state(ce->ce_id, order_lease_state,
	    ce)) == NULL)
		order_lease_unreachable(ce);
}

/*
 * SYNC: every live replica has the token; now the CA may look.  With
 * Redis away the other replicas cannot have it, and a failed validation
 * counts against the CA's limits: the token is shared again once Redis
 * is back (the lease decides then whether this node still orders).
 */
static void
order_synced(int all, void *arg)
{
	struct cert	*ce = arg;

	if (!all && !cluster_up()) {
		log_debug("certificate \"%s\": Redis is away; the CA is not "
		    "asked to validate before the token is shared", ce->ce_id);
		order_arm(ce, util_jitter(ORDER_LEASE_RETRY_MIN, 0.2));
		return;
	}
	order_challenge(ce);
}

void
order_sync(struct cert *ce)
{
	char	*keyauth;

	keyauth = keys_key_authorization(ce->ce_token,
	    acme_issuer_thumbprint(ce->ce_issuer));
	order_set_state(ce, ORDER_SYNC);
	cluster_token_drop(ce->ce_shared);
	ce->ce_shared = cluster_token_share(ce->ce_token, keyauth,
	    order_synced, ce);
	free(keyauth);
}

/* SHARE: the fields of a record that point into ce (nothing to free). */
static void
order_rec_fill(struct cert *ce, struct cluster_rec *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->cr_id = ce->ce_id;
	rec->cr_issuer = (char *)acme_issuer_name(ce->ce_issuer);
	rec->cr_url = ce->ce_order_url;
	rec->cr_idents = ce->ce_idents;
	rec->cr_nidents = ce->ce_nidents;
	rec->cr_key_type = ce->ce_key;
	rec->cr_chain = ce->ce_stored_chain;
	rec->cr_key = ce->ce_new_key;
	rec->cr_not_before = ce->ce_stored_nb;
	rec->cr_not_after = ce->ce_stored_na;
	rec->cr_renew_at = ce->ce_stored_renew;
	rec->cr_fence = cluster_lease_fence(ce->ce_lease);
}

/* A fenced write was refused: a newer lease holder has the say. */
static void
order_share_stale(struct cert *ce, const char *what)
{
	log_warnx("certificate \"%s\": another node holds a newer lease; "
	    "this node's %s is dropped", ce->ce_id, what);
	order_lease_lost(ce);
}

/*
 * Redis did not answer the order's write (a reconnect, a failover): the
 * CA keeps a ready order for hours, so try again from 1 s, doubling,
 * before giving the order up.  Tries made while the link is down do not
 * count: the write is tried again, and the fence decides, once it is up.
 */
static void
order_share_order_later(struct cert *ce)
{
	double	 delay = util_jitter((double)(1 << ce->ce_share_tries), 0.2);

	if (!cluster_up()) {
		log_debug("certificate \"%s\": the order waits for Redis",
		    ce->ce_id);
		order_arm(ce, util_jitter(ORDER_LEASE_RETRY_MIN, 0.2));
		return;
	}
	ce->ce_share_tries++;
	free(ce->ce_last_error);
	ce->ce_last_error = xstrdup("Redis did not take the order yet");
	ce->ce_last_error_at = util_now();
	log_warnx("certificate \"%s\": %s; trying again in %.1fs (try %d of "
	    "%d)", ce->ce_id, ce->ce_last_error, delay, ce->ce_share_tries,
	    ORDER_SHARE_ORDER_TRIES);
	order_arm(ce, delay);
}

static void
order_order_shared(int rc, void *arg)
{
	struct cert	*ce = arg;

	ce->ce_op = NULL;
	if (rc == 0) {
		order_share_stale(ce, "order");
		return;
	}
	if (rc == -1 && ce->ce_share_tries < ORDER_SHARE_ORDER_TRIES) {
		order_share_order_later(ce);
		return;
	}
	if (rc == -1) {
		order_fail(ce, 0, 0, "the order could not be written to Redis; "
		    "not finalizing what no other replica could resume");
		return;
	}
	ce->ce_share_tries = 0;
	ce->ce_order_shared = 1;
	order_set_state(ce, ORDER_FINALIZE);
	order_drive(ce);
}

void
order_share_order(struct cert *ce)
{
	struct cluster_rec	 rec;

	if (ce->ce_new_key == NULL &&
	    (ce->ce_new_key = keys_generate(ce->ce_key)) == NULL) {
		order_fail(ce, 0, 0, "creating the key failed");
		return;
	}
	order_set_state(ce, ORDER_SHARE);
	order_rec_fill(ce, &rec);
	if ((ce->ce_op = cluster_put_order(ce->ce_lease, &rec,
	    order_order_shared, ce)) == NULL)
		order_order_shared(-1, ce);
}

/*
 * The CA issued, but Redis did not take the certificate.  As with a full
 * disk (order_store_failed()), it is served from memory and the write is
 * tried again: from 2 s, doubling, up to 5 min.
 */
static void
order_share_failed(struct cert *ce)
{
	double	 delay;
	int	 n = ce->ce_share_tries > 8 ? 8 : ce->ce_share_tries;

	if (ce->ce_order_open) {
		/* The CA is done with this order: free its slot. */
		ce->ce_order_open = 0;
		acme_order_close(ce->ce_issuer);
	}
	if (ce->ce_share_tries++ == 0)
		order_publish(ce, ce->ce_idents, ce->ce_nidents,
		    ce->ce_stored_chain, ce->ce_new_key, ce->ce_stored_nb,
		    ce->ce_stored_na);
	delay = 2.0 * (double)(1 << n);
	if (delay > 300)
		delay = 300;
	delay = util_jitter(delay, 0.2);
	free(ce->ce_last_error);
	ce->ce_last_error = xstrdup("issued, but Redis did not take it yet");
	ce->ce_last_error_at = util_now();
	log_warnx("certificate \"%s\": %s; serving it from memory and trying "
	    "again in %.0fs (try %d)", ce->ce_id, ce->ce_last_error, delay,
	    ce->ce_share_tries);
	order_arm(ce, delay);
}

static void
order_cert_shared(int rc, void *arg)
{
	struct cert	*ce = arg;

	ce->ce_op = NULL;
	if (rc == 0) {
		order_share_stale(ce, "certificate");
		return;
	}
	if (rc == -1) {
		order_share_failed(ce);
		return;
	}
	order_set_state(ce, ORDER_STORE);
	order_store_write(ce);
}

void
order_share_cert(struct cert *ce)
{
	struct cluster_rec	 rec;

	order_set_state(ce, ORDER_SHARE);
	if (ce->ce_stored_renew == 0)
		ce->ce_stored_renew = order_renew_time(ce->ce_stored_nb,
		    ce->ce_stored_na, util_random_unit());
	order_rec_fill(ce, &rec);
	if ((ce->ce_op = cluster_put_cert(ce->ce_lease, &rec,
	    order_cert_shared, ce)) == NULL)
		order_share_failed(ce);
}

/* Taking another node's certificate. */

static void
order_cached(int rc, const char *cause, void *arg)
{
	struct cert	*ce = arg;

	ce->ce_cache_job = NULL;
	if (rc == -1)
		log_warnx("certificate \"%s\": keeping a copy in %s failed: "
		    "%s; serving it from memory", ce->ce_id,
		    acme_issuer_state_path(ce->ce_issuer), cause);
}

/*
 * Redis lacks the certificate this node serves, or holds an older one:
 * it lost a write (a failover, a restart from an old AOF).  This node's
 * goes back, under a lease and fenced like any write, so that the fleet
 * sees it again and a newer holder's write is never undone.
 */
static void
order_restore_end(struct cert *ce)
{
	cluster_op_cancel(ce->ce_restore_op);
	ce->ce_restore_op = NULL;
	cluster_lease_release(ce->ce_restore_lease);
	ce->ce_restore_lease = NULL;
}

static void
order_restored(int rc, void *arg)
{
	struct cert	*ce = arg;

	ce->ce_restore_op = NULL;
	if (rc == 1)
		log_info("certificate \"%s\": Redis had lost it; stored "
		    "there again", ce->ce_id);
	order_restore_end(ce);
}

static void
order_restore_leased(enum cluster_lease_event ev, void *arg)
{
	struct cert		*ce = arg;
	struct cluster_rec	 rec;
	struct cert_meta	 meta;
	EVP_PKEY		*key = NULL;
	char			*chain = NULL, *cause = NULL;

	if (ev != LEASE_GRANTED) {	/* busy: another node puts it back */
		order_restore_end(ce);
		return;
	}
	memset(&meta, 0, sizeof(meta));
	if (store_load_cert(acme_issuer_state_path(ce->ce_issuer), ce->ce_id,
	    &chain, &key, &meta, &cause) != 0) {
		log_warnx("certificate \"%s\": cannot put it back in Redis: "
		    "%s", ce->ce_id, cause != NULL ? cause : "not stored");
		free(cause);
		order_restore_end(ce);
		return;
	}
	memset(&rec, 0, sizeof(rec));
	rec.cr_id = ce->ce_id;
	rec.cr_issuer = (char *)acme_issuer_name(ce->ce_issuer);
	rec.cr_idents = ce->ce_idents;
	rec.cr_nidents = ce->ce_nidents;
	rec.cr_key_type = ce->ce_key;
	rec.cr_chain = chain;
	rec.cr_key = key;
	rec.cr_not_before = ce->ce_not_before;
	rec.cr_not_after = ce->ce_not_after;
	rec.cr_renew_at = ce->ce_renew_at;
	rec.cr_fence = cluster_lease_fence(ce->ce_restore_lease);
	ce->ce_restore_op = cluster_put_cert(ce->ce_restore_lease, &rec,
	    order_restored, ce);
	if (ce->ce_restore_op == NULL)
		order_restore_end(ce);
	EVP_PKEY_free(key);
	free(chain);
	store_meta_clear(&meta);
}

static void
order_restore(struct cert *ce)
{
	if (ce->ce_state != ORDER_IDLE || !ce->ce_have ||
	    ce->ce_restore_lease != NULL || order_ari_busy(ce) ||
	    ce->ce_not_after <= util_now())
		return;
	ce->ce_restore_lease = cluster_lease_take(ce->ce_id,
	    order_restore_leased, ce);
}

/* Serve rec, keep a copy in state_path, and renew when rec says. */
static void
order_adopt(struct cert *ce, const struct cluster_rec *rec)
{
	struct cert_meta	 meta;
	char			 until[32], na[UTIL_TIME_LEN];
	unsigned char		 md[32];
	int			 renewal = ce->ce_have;

	order_chain_digest(rec->cr_chain, md);
	if (ce->ce_have && memcmp(md, ce->ce_chain_md, sizeof(md)) == 0)
		return;
	/* Never back to an older one: Redis lost the newer. */
	if (ce->ce_have && rec->cr_not_before < ce->ce_not_before) {
		order_restore(ce);
		return;
	}
	order_log_time(until, sizeof(until), rec->cr_not_after);
	log_info("certificate \"%s\": node \"%s\" stored one valid until %s; "
	    "serving it", ce->ce_id, rec->cr_node, until);
	ce->ce_have = 1;
	ce->ce_not_before = rec->cr_not_before;
	ce->ce_not_after = rec->cr_not_after;
	memcpy(ce->ce_chain_md, md, sizeof(md));
	order_ari_adopt(ce, rec->cr_chain, NULL);
	order_publish(ce, rec->cr_idents, rec->cr_nidents, rec->cr_chain,
	    rec->cr_key, rec->cr_not_before, rec->cr_not_after);
	memset(&meta, 0, sizeof(meta));
	meta.cm_issued = util_now();
	meta.cm_idents = rec->cr_idents;
	meta.cm_nidents = rec->cr_nidents;
	meta.cm_key = rec->cr_key_type;
	if (ce->ce_cache_job != NULL)
		writer_cancel(ce->ce_cache_job);
	ce->ce_cache_job = writer_save_cert(acme_issuer_state_path(
	    ce->ce_issuer), ce->ce_id, rec->cr_chain, rec->cr_key, &meta,
	    order_cached, ce);
	util_time_rfc3339(rec->cr_not_after, na, sizeof(na));
	feed_emit(renewal ? "renewed" : "issued", "{s:s, s:s, s:s, s:s}",
	    "certificate", ce->ce_id, "issuer", acme_issuer_name(ce->ce_issuer),
	    "not_after", na, "node", rec->cr_node);
	/* Waiting for a renewal time or a lease: the new one decides. */
	if (ce->ce_state == ORDER_IDLE || ce->ce_state == ORDER_BACKOFF ||
	    (ce->ce_state == ORDER_LEASE && ce->ce_op == NULL)) {
		order_reset(ce);
		order_cluster_done(ce);
		ce->ce_failures = 0;
		ce->ce_lost_reordered = 0;
		order_cluster_schedule(ce, rec->cr_renew_at);
	}
}

static void
order_synced_state(int rc, struct cluster_rec *order, struct cluster_rec *cert,
    struct ari_state *ari, void *arg)
{
	struct cert	*ce = arg;

	(void)order;
	ce->ce_sync_op = NULL;
	if (ce->ce_sync_again) {
		/* News came while this read was on its way: read again. */
		ce->ce_sync_again = 0;
		order_cluster_fetch(ce);
		return;
	}
	if (rc != 0)
		return;
	if (cert != NULL && strcmp(cert->cr_issuer,
	    acme_issuer_name(ce->ce_issuer)) == 0 && order_idents_match(ce,
	    cert->cr_idents, cert->cr_nidents, cert->cr_key_type))
		order_adopt(ce, cert);
	else if (cert == NULL)
		order_restore(ce);
	/* After the certificate: the record names the one it is for. */
	if (ari != NULL)
		order_ari_shared(ce, ari);
	/* Still waiting for a lease (Redis was away, or it was busy): now. */
	if (ce->ce_state == ORDER_LEASE && ce->ce_lease == NULL &&
	    ce->ce_op == NULL) {
		ce->ce_lease_tries = 0;
		order_lease(ce);
	}
}

static void
order_cluster_fetch(struct cert *ce)
{
	if (ce->ce_sync_op != NULL)
		ce->ce_sync_again = 1;
	else
		ce->ce_sync_op = cluster_get_state(ce->ce_id,
		    order_synced_state, ce);
}

/*
 * Catch up with Redis (a reconnect, or another node's "cert" message):
 * read what it holds first, and take the certificate another node stored,
 * before asking again for a lease that node may still hold.
 */
void
order_cluster_sync(struct cert *ce)
{
	order_cluster_fetch(ce);
}

/* order_reset()'s part: the order's cluster work, not the lease. */
void
order_cluster_reset(struct cert *ce)
{
	cluster_op_cancel(ce->ce_op);
	ce->ce_op = NULL;
	cluster_token_drop(ce->ce_shared);
	ce->ce_shared = NULL;
	free(ce->ce_challenge_url);
	ce->ce_challenge_url = NULL;
	ce->ce_order_shared = 0;
	ce->ce_stored_renew = 0;
	ce->ce_share_tries = 0;
}

/* The certificate is settled for now: the lease goes back. */
void
order_cluster_done(struct cert *ce)
{
	cluster_lease_release(ce->ce_lease);
	ce->ce_lease = NULL;
}

void
order_cluster_free(struct cert *ce)
{
	order_restore_end(ce);
	order_cluster_done(ce);
	cluster_op_cancel(ce->ce_sync_op);
	ce->ce_sync_op = NULL;
	ce->ce_sync_again = 0;
	if (ce->ce_cache_job != NULL)
		writer_cancel(ce->ce_cache_job);
	ce->ce_cache_job = NULL;
}
