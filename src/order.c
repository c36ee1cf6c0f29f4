/*
 * One managed certificate and the state machine of its order (RFC 8555
 * section 7.4).  Every state, in the order an order goes through them:
 *
 *   IDLE           waits for the renewal time ("acmectl renew" or the
 *        |         end of BACKOFF starts sooner), then begins with one of:
 *        +-> LEASE        replicas: the certificate's lease, then Redis'
 *        |                state: a certificate another replica renewed
 *        |                -> IDLE; an order another finalized -> ORDER_POLL
 *        +-> (resume)     a pending order on disk, from before a restart
 *        |                -> ORDER_POLL
 *        +-> NEW          newOrder
 *   for each authorization, one after the other:
 *       AUTHZ          fetch it; already valid -> the next one
 *     [ DNS_PUBLISH ]  dns-01: the TXT record is being published
 *     [ SYNC ]         replicas: every live replica has the token
 *       READY_CHECK    our own answer, fetched the way the CA will
 *       CHALLENGE      tell the CA to validate
 *       AUTHZ_POLL     until the authorization settles -> AUTHZ
 *   then:
 *     [ SHARE ]        replicas: the order and its key go to Redis
 *       FINALIZE       the CSR
 *       ORDER_POLL     until the certificate is issued (resumed orders
 *                      enter here, with the key kept beside them)
 *       DOWNLOAD       the chain, and its alternates for preferred_chain
 *     [ SHARE ]        replicas: the certificate goes to Redis, fenced
 *       STORE          written to state_path, retried while it fails
 *       IDLE
 *
 * [ ] marks a state only some orders pass.  Any failure goes to BACKOFF,
 * which begins again when it expires; a resumed order that is no good any
 * more is forgotten and begins anew.
 *
 * READY_CHECK fetches our own answer the way the CA will (ready.c), and
 * tells the CA only once it answers; "challenge_check off" skips it.
 * A certificate has at most one request, one timer and one readiness
 * check outstanding, so freeing it only has to cancel those three.
 * Authorizations of one order are worked one after the other;
 * concurrency comes from the many orders.
 */
#include <sys/time.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sidecar.h"
#include "order.h"

static const char *order_state_names[ORDER_STATE_MAX] = {
	"idle", "new", "authz", "challenge", "authz-poll", "finalize",
	"order-poll", "download", "store", "backoff", "lease", "sync", "share",
	"ready-check", "dns-publish"
};

/* Problems that the same order cannot overcome by trying again soon. */
static const char *order_permanent_problems[] = {
	"rejectedIdentifier", "caa", "malformed", "badCSR",
	"unsupportedIdentifier", "invalidContact", "unsupportedContact",
	"badSignatureAlgorithm", "badPublicKey", "userActionRequired",
	"externalAccountRequired", NULL
};

/*
 * An issued certificate that state_path refused is kept in memory and its
 * write retried, from a few seconds up to five minutes apart: a full disk
 * is usually freed by a person, and the next try should follow soon.
 */
#define ORDER_STORE_RETRY_MIN	2		/* seconds */
#define ORDER_STORE_RETRY_MAX	300

static void	 order_reply(const struct acme_reply *, void *);
static void	 order_begin(struct cert *);
static void	 order_abandon(struct cert *, const char *);
static int	 order_resume(struct cert *);

const char *
order_state_name(enum order_state state)
{
	if (state >= ORDER_STATE_MAX)
		return "?";
	return order_state_names[state];
}

void
order_set_state(struct cert *ce, enum order_state state)
{
	if (state >= ORDER_STATE_MAX)
		fatalx("%s: bad order state %d", __func__, state);
	log_debug("certificate \"%s\": %s -> %s", ce->ce_id,
	    order_state_names[ce->ce_state], order_state_names[state]);
	ce->ce_state = state;
}

static void
order_timer_cb(int fd, short ev, void *arg)
{
	struct cert	*ce = arg;

	(void)fd;
	(void)ev;
	if (ce->ce_state == ORDER_IDLE || ce->ce_state == ORDER_BACKOFF)
		order_begin(ce);
	else if (ce->ce_state == ORDER_STORE)
		order_store_write(ce);
	else if (ce->ce_state == ORDER_LEASE)
		order_lease(ce);
	else if (ce->ce_state == ORDER_SYNC)
		order_sync(ce);
	else if (ce->ce_state == ORDER_SHARE && ce->ce_stored_chain == NULL)
		order_share_order(ce);
	else if (ce->ce_state == ORDER_SHARE)
		order_share_cert(ce);
	else
		order_drive(ce);
}

void
order_arm(struct cert *ce, double seconds)
{
	struct timeval	 tv;

	if (seconds < 0)
		seconds = 0;
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	evtimer_add(ce->ce_timer, &tv);
	ce->ce_timer_at = util_now() + tv.tv_sec;
}

struct cert *
order_cert_new(struct event_base *base, struct acme_issuer *ai,
    const struct conf_cert *cc)
{
	struct cert	*ce;
	size_t		 i;

	ce = xcalloc(1, sizeof(*ce));
	ce->ce_base = base;
	ce->ce_issuer = ai;
	ce->ce_id = xstrdup(cc->cc_id);
	ce->ce_key = cc->cc_key;
	ce->ce_nidents = cc->cc_nidents;
	ce->ce_idents = xreallocarray(NULL, cc->cc_nidents, sizeof(char *));
	for (i = 0; i < cc->cc_nidents; i++)
		ce->ce_idents[i] = xstrdup(cc->cc_idents[i]);
	if ((ce->ce_timer = evtimer_new(base, order_timer_cb, ce)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	ce->ce_profile = cc->cc_profile != NULL ? xstrdup(cc->cc_profile) :
	    NULL;
	ce->ce_challenge = cc->cc_type;
	if (cc->cc_dns_hook != NULL)
		ce->ce_dns_hook = xstrdup(cc->cc_dns_hook);
	ce->ce_dns_hook_timeout = cc->cc_dns_hook_timeout;
	if (cc->cc_dns_update != NULL)
		ce->ce_dns_update = xstrdup(cc->cc_dns_update);
	if (cc->cc_dns_check != NULL)
		ce->ce_dns_check = xstrdup(cc->cc_dns_check);
	order_ari_init(ce);
	ce->ce_state = ORDER_IDLE;
	return ce;
}

void
order_strv_free(char **v, size_t n)
{
	size_t	 i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/*
 * A token is answered by two responders: our own listener and nginx,
 * through the shared zone.
 */
static void
order_token_set(struct cert *ce, const char *token, const char *keyauth)
{
	challenge_add(token, keyauth);
	shm_token_add(token, keyauth);
	free(ce->ce_token);
	ce->ce_token = xstrdup(token);
}

static void
order_token_clear(struct cert *ce)
{
	if (ce->ce_token == NULL)
		return;
	challenge_remove(ce->ce_token);
	shm_token_remove(ce->ce_token);
	free(ce->ce_token);
	ce->ce_token = NULL;
}

/*
 * tls-alpn-01: one validation certificate, made here, goes to the shared
 * zone, where nginx's module answers the CA on nginx's https port, and
 * to alpn.c's responder where tls_alpn_listen runs it.
 */
static int
order_alpn_set(struct cert *ce, const char *keyauth, char **cause)
{
	const char	*ident = ce->ce_authz_ident;
	EVP_PKEY	*key;
	X509		*cert = NULL;
	int		 rc = -1;

	if ((key = keys_generate(KEY_ECDSA_256)) == NULL ||
	    (cert = keys_alpn_cert(key, ident, keyauth)) == NULL) {
		xasprintf(cause, "challenge tls-alpn-01 for %s: cannot make "
		    "the validation certificate", ident);
		goto out;
	}
	if (alpn_running() && alpn_add(ident, keyauth, cert, key, cause) ==
	    -1)
		goto out;
	shm_alpn_add(ident, keyauth, cert, key);
	ce->ce_alpn_ident = xstrdup(ident);
	ce->ce_alpn_keyauth = xstrdup(keyauth);
	rc = 0;
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

static void
order_alpn_clear(struct cert *ce)
{
	if (ce->ce_alpn_ident == NULL)
		return;
	alpn_remove(ce->ce_alpn_ident, ce->ce_alpn_keyauth);
	shm_alpn_remove(ce->ce_alpn_ident, ce->ce_alpn_keyauth);
	free(ce->ce_alpn_ident);
	free(ce->ce_alpn_keyauth);
	ce->ce_alpn_ident = NULL;
	ce->ce_alpn_keyauth = NULL;
}

/*
 * Forget the order in progress, keeping the certificate in use (and, with
 * several replicas, the lease the next try runs under).
 */
void
order_reset(struct cert *ce)
{
	if (ce->ce_req != NULL) {
		acme_req_cancel(ce->ce_req);
		ce->ce_req = NULL;
	}
	if (ce->ce_job != NULL) {
		writer_cancel(ce->ce_job);
		ce->ce_job = NULL;
	}
	evtimer_del(ce->ce_timer);
	ready_cancel(ce->ce_ready);
	ce->ce_ready = NULL;
	free(ce->ce_authz_ident);
	ce->ce_authz_ident = NULL;
	if (ce->ce_order_open) {
		ce->ce_order_open = 0;
		acme_order_close(ce->ce_issuer);
	}
	order_token_clear(ce);
	order_alpn_clear(ce);
	order_dns_clear(ce);
	order_cluster_reset(ce);
	free(ce->ce_stored_chain);
	ce->ce_stored_chain = NULL;
	X509_free(ce->ce_stored_leaf);
	ce->ce_stored_leaf = NULL;
	free(ce->ce_order_url);
	free(ce->ce_finalize_url);
	free(ce->ce_cert_url);
	ce->ce_order_url = ce->ce_finalize_url = ce->ce_cert_url = NULL;
	order_strv_free(ce->ce_authz, ce->ce_nauthz);
	ce->ce_authz = NULL;
	ce->ce_nauthz = ce->ce_authz_next = 0;
	if (ce->ce_alternates != NULL)
		http_links_free(ce->ce_alternates);
	ce->ce_alternates = NULL;
	ce->ce_alt_next = 0;
	free(ce->ce_default_chain);
	ce->ce_default_chain = NULL;
	EVP_PKEY_free(ce->ce_new_key);
	ce->ce_new_key = NULL;
	ce->ce_polls = 0;
	ce->ce_store_tries = 0;
	ce->ce_resumed = 0;
}

void
order_cert_free(struct cert *ce)
{
	if (ce == NULL)
		return;
	order_reset(ce);
	order_cluster_free(ce);
	order_ari_free(ce);
	if (ce->ce_revoke_req != NULL) {
		acme_req_cancel(ce->ce_revoke_req);
		ce->ce_revoke_req = NULL;
		ce->ce_revoke_cb(-2, "the certificate is no longer managed",
		    ce->ce_revoke_arg);
	}
	shm_cert_remove(ce->ce_id);
	event_free(ce->ce_timer);
	order_strv_free(ce->ce_idents, ce->ce_nidents);
	free(ce->ce_id);
	free(ce->ce_last_error);
	free(ce->ce_profile);
	free(ce->ce_sent_profile);
	free(ce->ce_dns_hook);
	free(ce->ce_dns_update);
	free(ce->ce_dns_check);
	free(ce);
}

const char *
order_cert_id(const struct cert *ce)
{
	return ce->ce_id;
}

enum order_state
order_cert_state(const struct cert *ce)
{
	return ce->ce_state;
}

int
order_cert_valid(const struct cert *ce)
{
	return ce->ce_have && ce->ce_not_after > util_now();
}

struct acme_issuer *
order_cert_issuer(const struct cert *ce)
{
	return ce->ce_issuer;
}

/* A snapshot for the control API; the pointers live as long as ce. */
void
order_cert_info(const struct cert *ce, struct order_info *oi)
{
	memset(oi, 0, sizeof(*oi));
	oi->oi_id = ce->ce_id;
	oi->oi_issuer = acme_issuer_name(ce->ce_issuer);
	oi->oi_idents = ce->ce_idents;
	oi->oi_nidents = ce->ce_nidents;
	oi->oi_key = ce->ce_key;
	oi->oi_state = ce->ce_state;
	oi->oi_have = ce->ce_have;
	if (ce->ce_have) {
		oi->oi_not_before = ce->ce_not_before;
		oi->oi_not_after = ce->ce_not_after;
	}
	if (ce->ce_state == ORDER_IDLE && ce->ce_have) {
		oi->oi_renew_at = ce->ce_renew_at;
		oi->oi_renew_ari = ce->ce_renew_ari;
	}
	if (ce->ce_have && ce->ce_ari.as_end != 0) {
		oi->oi_ari_start = ce->ce_ari.as_start;
		oi->oi_ari_end = ce->ce_ari.as_end;
		oi->oi_ari_explanation = ce->ce_ari.as_explanation;
	}
	if (ce->ce_have && evtimer_pending(ce->ce_ari_timer, NULL))
		oi->oi_ari_next_fetch = ce->ce_ari.as_next_fetch > util_now() ?
		    ce->ce_ari.as_next_fetch : util_now();
	oi->oi_cert_id = ce->ce_cert_id;
	oi->oi_profile = ce->ce_profile;
	oi->oi_sent_profile = ce->ce_sent_profile;
	/* In lease, a retry only while waiting, not while asking Redis. */
	if (ce->ce_state == ORDER_BACKOFF || (ce->ce_state == ORDER_LEASE &&
	    evtimer_pending(ce->ce_timer, NULL)) ||
	    (ce->ce_state == ORDER_STORE && ce->ce_store_tries > 0) ||
	    (ce->ce_state == ORDER_SHARE && ce->ce_share_tries > 0))
		oi->oi_retry_at = ce->ce_timer_at;
	oi->oi_failures = ce->ce_failures;
	oi->oi_last_error = ce->ce_last_error;
	oi->oi_last_error_at = ce->ce_last_error_at;
}

int
order_cert_same_conf(const struct cert *ce, const struct conf_cert *cc)
{
	size_t	 i;

	if (strcmp(ce->ce_id, cc->cc_id) != 0 || ce->ce_key != cc->cc_key ||
	    ce->ce_nidents != cc->cc_nidents)
		return 0;
	if ((ce->ce_profile == NULL) != (cc->cc_profile == NULL) ||
	    (ce->ce_profile != NULL &&
	    strcmp(ce->ce_profile, cc->cc_profile) != 0))
		return 0;
	if (ce->ce_challenge != cc->cc_type ||
	    (ce->ce_dns_hook == NULL) != (cc->cc_dns_hook == NULL) ||
	    (ce->ce_dns_hook != NULL &&
	    (strcmp(ce->ce_dns_hook, cc->cc_dns_hook) != 0 ||
	    ce->ce_dns_hook_timeout != cc->cc_dns_hook_timeout)))
		return 0;
	if ((ce->ce_dns_update == NULL) != (cc->cc_dns_update == NULL) ||
	    (ce->ce_dns_update != NULL &&
	    strcmp(ce->ce_dns_update, cc->cc_dns_update) != 0) ||
	    (ce->ce_dns_check == NULL) != (cc->cc_dns_check == NULL) ||
	    (ce->ce_dns_check != NULL &&
	    strcmp(ce->ce_dns_check, cc->cc_dns_check) != 0))
		return 0;
	for (i = 0; i < ce->ce_nidents; i++)
		if (strcmp(ce->ce_idents[i], cc->cc_idents[i]) != 0)
			return 0;
	return 1;
}

time_t
order_renew_time(time_t not_before, time_t not_after, double random_unit)
{
	time_t	 life = not_after - not_before, jitter_max;
	double	 share = life <= 10 * 24 * 3600 ? 0.5 : 2.0 / 3.0;

	if (life <= 0)
		return not_before;
	/* Spread renewals of certificates issued together: up to 1%. */
	jitter_max = life / 100;
	if (jitter_max > 6 * 3600)
		jitter_max = 6 * 3600;
	return not_before + (time_t)((double)life * share) -
	    (time_t)(random_unit * (double)jitter_max);
}

void
order_log_time(char *buf, size_t len, time_t t)
{
	struct tm	 tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * Publish a certificate whose key is held decoded (a new key, another
 * node's): the zone takes the key as PEM text.
 */
void
order_publish(struct cert *ce, char *const *idents, size_t nidents,
    const char *chain, EVP_PKEY *key, time_t not_before, time_t not_after)
{
	char	*pem;

	if ((pem = keys_to_pem(key)) == NULL) {
		log_warnx("certificate \"%s\": its key does not encode; not "
		    "published", ce->ce_id);
		return;
	}
	shm_cert_set(ce->ce_id, acme_issuer_name(ce->ce_issuer), idents,
	    nidents, chain, pem, not_before, not_after);
	keys_pem_free(pem);
}

/*
 * What tells two certificates apart: a renewal may be issued within the
 * second of the one it replaces, so the dates alone do not.
 */
void
order_chain_digest(const char *chain, unsigned char md[32])
{
	if (!EVP_Digest(chain, strlen(chain), md, NULL, EVP_sha256(), NULL))
		fatalx("%s: EVP_Digest", __func__);
}

/*
 * Arm the renewal timer for the certificate in use: at renew_at (another
 * replica's choice), or when 0 at a time of our own.
 */
void
order_schedule_renewal(struct cert *ce, time_t renew_at)
{
	char	 until[32], at[32];

	ce->ce_renew_ari = 0;
	if (renew_at == 0 && (renew_at = order_ari_renew_at(ce)) != 0)
		ce->ce_renew_ari = 1;
	ce->ce_renew_at = renew_at != 0 ? renew_at :
	    order_renew_time(ce->ce_not_before, ce->ce_not_after,
	    util_random_unit());
	order_log_time(until, sizeof(until), ce->ce_not_after);
	order_log_time(at, sizeof(at), ce->ce_renew_at);
	log_info("certificate \"%s\" valid until %s, renewal at %s (%s)",
	    ce->ce_id, until, at, ce->ce_renew_ari ? "ari" : "lifetime");
	order_set_state(ce, ORDER_IDLE);
	order_arm(ce, (double)(ce->ce_renew_at - util_now()));
	order_ari_arm(ce);
}

/* Whether a stored certificate is for ce's identifiers and key type. */
int
order_idents_match(const struct cert *ce, char *const *idents, size_t n,
    enum key_type key)
{
	size_t	 i, j;

	if (key != ce->ce_key || n != ce->ce_nidents)
		return 0;
	for (i = 0; i < ce->ce_nidents; i++) {
		for (j = 0; j < n; j++)
			if (strcmp(ce->ce_idents[i], idents[j]) == 0)
				break;
		if (j == n)
			return 0;
	}
	return 1;
}

/*
 * Take the stored certificate if it is still the configured one and not
 * yet due; otherwise order a new one at once.
 */
void
order_cert_start(struct cert *ce)
{
	struct stored_cert	 sd;
	struct cert_meta	*meta = &sd.sd_meta;
	char			*cause = NULL;
	const char		*dir = acme_issuer_state_path(ce->ce_issuer);
	int			 rc;

	rc = store_load_stored(dir, ce->ce_id, &sd, &cause);
	if (rc == -1) {
		log_warnx("certificate \"%s\": %s; ordering a new one",
		    ce->ce_id, cause);
		free(cause);
	} else if (rc == 0 && !order_idents_match(ce, meta->cm_idents,
	    meta->cm_nidents, meta->cm_key))
		log_info("certificate \"%s\": identifiers or key type "
		    "changed; ordering a new one", ce->ce_id);
	else if (rc == 0) {
		ce->ce_have = 1;
		ce->ce_not_before = meta->cm_not_before;
		ce->ce_not_after = meta->cm_not_after;
		order_chain_digest(sd.sd_chain, ce->ce_chain_md);
		if (sd.sd_cert_id == NULL)
			log_debug("certificate \"%s\": no CertID: no ARI and "
			    "no \"replaces\"", ce->ce_id);
		order_ari_adopt_id(ce, sd.sd_cert_id);
		sd.sd_cert_id = NULL;
	}
	/*
	 * nginx serves what is stored, even while a replacement for changed
	 * identifiers is on order: it is still valid for the names it has.
	 * The key goes to the zone as key.pem holds it.
	 */
	if (rc == 0)
		shm_cert_take(ce->ce_id, acme_issuer_name(ce->ce_issuer),
		    meta->cm_idents, meta->cm_nidents, &sd.sd_chain,
		    &sd.sd_key_pem, meta->cm_not_before, meta->cm_not_after);
	store_stored_clear(&sd);

	if (ce->ce_have && !order_renew_due(ce)) {
		/* A renewal finalized before a restart is still wanted. */
		if (cluster_enabled() || order_resume(ce) == -1)
			order_schedule_renewal(ce, 0);
	} else
		order_begin(ce);
}

/*
 * Whether the certificate in use is due: inside (or past) the CA's ARI
 * window when there is one, else 2/3 of its lifetime, without jitter.
 */
int
order_renew_due(const struct cert *ce)
{
	time_t	 ari = order_ari_renew_at(ce);

	if (ari != 0)
		return ari <= util_now();
	return order_renew_time(ce->ce_not_before, ce->ce_not_after, 0) <=
	    util_now();
}

void
order_renew_now(struct cert *ce)
{
	/* With a cluster: a new one, not the current one in Redis. */
	ce->ce_renew_asked = 1;
	order_begin(ce);
}

static int
order_is_permanent(const struct acme_reply *r)
{
	size_t	 i;

	for (i = 0; order_permanent_problems[i] != NULL; i++)
		if (acme_problem_is(r, order_permanent_problems[i]))
			return 1;
	return 0;
}

/*
 * The order failed: log why, forget it, and back off.  The wait doubles
 * from ORDER_BACKOFF_MIN to ORDER_BACKOFF_MAX; problems that another try
 * cannot fix start at ORDER_BACKOFF_PERMANENT and are logged once.
 */
void
order_fail(struct cert *ce, int permanent, time_t not_before,
    const char *why)
{
	double	 delay;
	int	 repeated;
	char	 retry[UTIL_TIME_LEN];

	order_reset(ce);
	ce->ce_failures++;
	delay = (double)ORDER_BACKOFF_MIN *
	    (double)(1ULL << (ce->ce_failures > 12 ? 12 : ce->ce_failures - 1));
	if (permanent && delay < ORDER_BACKOFF_PERMANENT)
		delay = ORDER_BACKOFF_PERMANENT;
	if (delay > ORDER_BACKOFF_MAX)
		delay = ORDER_BACKOFF_MAX;
	delay = util_jitter(delay, 0.2);
	if (not_before > 0 && (double)(not_before - util_now()) > delay)
		delay = (double)(not_before - util_now());
	/* A Retry-After of years is a broken CA, not a plan: cap it too. */
	if (delay > ORDER_BACKOFF_MAX)
		delay = util_jitter(ORDER_BACKOFF_MAX, 0.2);

	repeated = ce->ce_last_error != NULL &&
	    strcmp(ce->ce_last_error, why) == 0;
	free(ce->ce_last_error);
	ce->ce_last_error = util_utf8_copy(why);
	ce->ce_last_error_at = util_now();
	if (permanent && repeated)
		log_debug("certificate \"%s\": %s (again); retrying in %.0fs",
		    ce->ce_id, why, delay);
	else
		log_warnx("certificate \"%s\": %s; retrying in %.0fs",
		    ce->ce_id, why, delay);
	order_set_state(ce, ORDER_BACKOFF);
	order_arm(ce, delay);
	util_time_rfc3339(ce->ce_timer_at, retry, sizeof(retry));
	feed_emit("failed", "{s:s, s:s, s:s, s:i, s:s}", "certificate",
	    ce->ce_id, "issuer", acme_issuer_name(ce->ce_issuer), "error",
	    ce->ce_last_error, "failures", ce->ce_failures, "next_retry", retry);
	metrics_order_outcome(acme_issuer_name(ce->ce_issuer), METRICS_FAILED);
}

static int	order_url_ok(const char *);

/* The port of a parsed URL, its scheme's default when it has none. */
static int
order_uri_port(const struct evhttp_uri *uri)
{
	int	 port = evhttp_uri_get_port(uri);

	if (port != -1)
		return port;
	return strcasecmp(evhttp_uri_get_scheme(uri), "https") == 0 ? 443 : 80;
}

/*
 * Whether url, read back from state_path, can be one of the CA's: as good
 * as order_url_ok() asks of the CA's own, and on the origin of the
 * issuer's directory (scheme, host, port).  Nothing else in the file was
 * checked by the CA, and our signed requests must not go elsewhere, nor
 * over plain http to an https CA.
 */
static int
order_url_of_issuer(const char *url, const char *directory)
{
	struct evhttp_uri	*u = NULL, *d = NULL;
	int			 ok = 0;

	if (!order_url_ok(url) || !order_url_ok(directory) ||
	    (u = evhttp_uri_parse(url)) == NULL ||
	    (d = evhttp_uri_parse(directory)) == NULL)
		goto out;
	ok = strcasecmp(evhttp_uri_get_scheme(u),
	    evhttp_uri_get_scheme(d)) == 0 &&
	    strcasecmp(evhttp_uri_get_host(u), evhttp_uri_get_host(d)) == 0 &&
	    order_uri_port(u) == order_uri_port(d);
out:
	if (u != NULL)
		evhttp_uri_free(u);
	if (d != NULL)
		evhttp_uri_free(d);
	return ok;
}

/*
 * Resume the order a previous run finalized but did not see through to a
 * stored certificate (store_save_pending()): fetch it, and download its
 * certificate for the key kept with it.  Returns 0 when resumed.
 */
static int
order_resume(struct cert *ce)
{
	const char	*dir = acme_issuer_state_path(ce->ce_issuer);
	const char	*ca = acme_issuer_uri(ce->ce_issuer);
	char		*url = NULL, *cause = NULL;
	EVP_PKEY	*key = NULL;
	int		 rc;

	rc = store_load_pending(dir, ce->ce_id, ce->ce_idents, ce->ce_nidents,
	    &url, &key, &cause);
	if (rc == -1) {
		log_warnx("certificate \"%s\": %s", ce->ce_id, cause);
		free(cause);
	}
	if (rc == 0 && !order_url_of_issuer(url, ca)) {
		log_warnx("certificate \"%s\": the pending order %s is not on "
		    "the CA's origin (%s); not resumed", ce->ce_id, url, ca);
		free(url);
		EVP_PKEY_free(key);
		rc = 1;
	}
	if (rc != 0)
		return -1;
	log_info("certificate \"%s\": resuming order %s, finalized before "
	    "a restart", ce->ce_id, url);
	ce->ce_order_url = url;
	ce->ce_new_key = key;
	ce->ce_resumed = 1;
	order_set_state(ce, ORDER_ORDER_POLL);
	feed_emit("order", "{s:s, s:s, s:b, s:b}", "certificate", ce->ce_id,
	    "issuer", acme_issuer_name(ce->ce_issuer), "renewal", ce->ce_have,
	    "resumed", 1);
	order_drive(ce);
	return 0;
}

/*
 * A resumed order is no good: forget it, and order anew at once unless the
 * certificate in use is not due yet.  Never resume again from here: the
 * pending file may be on a disk that refuses to remove it.
 */
static void
order_abandon(struct cert *ce, const char *why)
{
	int	 due;

	due = !ce->ce_have || order_renew_due(ce);
	log_warnx("certificate \"%s\": the resumed order %s is no good (%s)%s",
	    ce->ce_id, ce->ce_order_url, why, due ? "; ordering a new one" : "");
	store_remove_pending(acme_issuer_state_path(ce->ce_issuer), ce->ce_id);
	if (due)
		order_begin_new(ce);
	else {
		order_reset(ce);
		order_cluster_done(ce);
		order_schedule_renewal(ce, 0);
	}
}

/*
 * Whether the CA no longer knows the order or a part of it: its database
 * was reset, or the order expired.  A CA may type such a 404 "malformed"
 * (Pebble's NotFoundProblem does), which must not read as a request no
 * retry can mend.
 */
static int
order_reply_gone(const struct acme_reply *r)
{
	return r->status == 404 || r->status == 410;
}

/*
 * The CA forgot an order under way: it cannot be retried, only replaced.
 * Order anew at once, once until the next issue; a CA that forgets every
 * order backs off as after any failure.
 */
static int
order_lost(struct cert *ce, const char *why)
{
	if (ce->ce_lost_reordered || ce->ce_state == ORDER_NEW)
		return 0;
	log_warnx("certificate \"%s\": the CA no longer knows the order %s "
	    "(%s); ordering a new one", ce->ce_id, ce->ce_order_url, why);
	ce->ce_lost_reordered = 1;
	order_begin_new(ce);
	return 1;
}

static void
order_fail_reply(struct cert *ce, const char *what, const struct acme_reply *r)
{
	char	*desc, *why;
	int	 gone = order_reply_gone(r);

	desc = acme_reply_describe(r);
	xasprintf(&why, "%s: %s", what, desc);
	/*
	 * A resumed order is given up only when the CA says it is gone or
	 * refused; a 5xx, a 429 or no answer keeps it for the next try, or
	 * a short outage at a restart would have the CA issue twice.
	 */
	if (ce->ce_resumed && (r->status == 403 || gone))
		order_abandon(ce, why);
	else if (!gone || !order_lost(ce, why))
		order_fail(ce, !gone && order_is_permanent(r), r->retry_after,
		    why);
	free(why);
	free(desc);
}

static void
order_failf(struct cert *ce, const char *fmt, ...) PRINTFLIKE(2, 3);
static void
order_failf_permanent(struct cert *ce, const char *fmt, ...) PRINTFLIKE(2, 3);

/* A failure that trying again soon cannot mend (a configuration's). */
static void
order_failf_permanent(struct cert *ce, const char *fmt, ...)
{
	va_list	 ap;
	char	*why;

	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) == -1)
		fatal("vasprintf");
	va_end(ap);
	order_fail(ce, 1, 0, why);
	free(why);
}

static void
order_failf(struct cert *ce, const char *fmt, ...)
{
	va_list	 ap;
	char	*why;

	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) == -1)
		fatal("vasprintf");
	va_end(ap);
	if (ce->ce_resumed)
		order_abandon(ce, why);
	else
		order_fail(ce, 0, 0, why);
	free(why);
}

/*
 * Order anew, or resume the order a restart interrupted.  With several
 * replicas, the lease first: what to do then is in Redis.
 */
static void
order_begin(struct cert *ce)
{
	order_reset(ce);
	if (cluster_enabled()) {
		order_lease(ce);
		return;
	}
	if (order_resume(ce) == 0)
		return;
	order_begin_new(ce);
}

void
order_begin_new(struct cert *ce)
{
	order_reset(ce);
	log_info("certificate \"%s\": ordering from \"%s\"%s", ce->ce_id,
	    acme_issuer_name(ce->ce_issuer), ce->ce_have ? " (renewal)" : "");
	ce->ce_no_replaces = 0;
	order_set_state(ce, ORDER_NEW);
	feed_emit("order", "{s:s, s:s, s:b}", "certificate", ce->ce_id,
	    "issuer", acme_issuer_name(ce->ce_issuer), "renewal", ce->ce_have);
	order_drive(ce);
}

/*
 * The profile newOrder names: this certificate's profile=, else the
 * issuer's.  One the directory does not list is left out with a warning,
 * or with "profile NAME require" fails the order before it is sent.
 * Returns 0 with *name (NULL: none), 1 while the directory is not loaded
 * yet (the order waits), -1 when the order failed.
 */
static int
order_profile(struct cert *ce, const char **name)
{
	int		 require;
	const char	*p = acme_issuer_profile(ce->ce_issuer, &require);

	*name = NULL;
	if (ce->ce_profile != NULL)
		p = ce->ce_profile;
	if (p == NULL)
		return 0;
	if (acme_issuer_state(ce->ce_issuer) != ISSUER_READY) {
		order_arm(ce, 1);
		return 1;
	}
	if (acme_issuer_profile_listed(ce->ce_issuer, p)) {
		*name = p;
		return 0;
	}
	if (require) {
		order_failf_permanent(ce, "profile \"%s\" is required, but "
		    "the CA's directory does not offer it (meta.profiles); "
		    "no order sent", p);
		return -1;
	}
	if (!ce->ce_profile_warned)
		log_warnx("certificate \"%s\": the CA's directory does not "
		    "offer profile \"%s\" (meta.profiles); ordering without "
		    "it", ce->ce_id, p);
	ce->ce_profile_warned = 1;
	return 0;
}

static char *
order_new_order_payload(struct cert *ce, const char *profile)
{
	json_t	*o, *ids;
	char	*s;
	size_t	 i;

	ids = json_array();
	for (i = 0; i < ce->ce_nidents; i++)
		json_array_append_new(ids, json_pack("{s:s, s:s}", "type",
		    conf_ident_is_ip(ce->ce_idents[i]) ? "ip" : "dns",
		    "value", ce->ce_idents[i]));
	o = json_pack("{s:o}", "identifiers", ids);
	if (profile != NULL)
		json_object_set_new(o, "profile", json_string(profile));
	/* RFC 9773 section 5: which certificate this one replaces. */
	ce->ce_sent_replaces = ce->ce_have && ce->ce_cert_id != NULL &&
	    !ce->ce_no_replaces;
	if (ce->ce_sent_replaces)
		json_object_set_new(o, "replaces", json_string(ce->ce_cert_id));
	free(ce->ce_sent_profile);
	ce->ce_sent_profile = profile != NULL ? xstrdup(profile) : NULL;
	if ((s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("%s: json_dumps", __func__);
	json_decref(o);
	return s;
}

/*
 * The CSR for a new key (or the resumed order's key), with the order saved
 * as pending first: from the finalize on, the CA may issue, and a restart
 * must find this order again rather than make another.
 */
static char *
order_finalize_payload(struct cert *ce)
{
	char	*csr, *s, *cause = NULL;

	if (ce->ce_new_key == NULL &&
	    (ce->ce_new_key = keys_generate(ce->ce_key)) == NULL)
		return NULL;
	/* Several replicas keep it in Redis instead (order_share_order()). */
	if (!cluster_enabled() && store_save_pending(acme_issuer_state_path(ce->ce_issuer),
	    ce->ce_id, ce->ce_order_url, ce->ce_idents, ce->ce_nidents,
	    ce->ce_new_key, &cause) == -1) {
		log_warnx("certificate \"%s\": saving the pending order: %s; "
		    "a restart before the certificate is stored will order "
		    "it again", ce->ce_id, cause);
		free(cause);
	}
	if ((csr = keys_csr(ce->ce_new_key, ce->ce_idents, ce->ce_nidents,
	    acme_issuer_cn_in_csr(ce->ce_issuer))) == NULL)
		return NULL;
	xasprintf(&s, "{\"csr\":\"%s\"}", csr);
	free(csr);
	return s;
}

/* Send the request that the current state calls for. */
void
order_drive(struct cert *ce)
{
	struct acme_issuer	*ai = ce->ce_issuer;
	const char		*url = NULL, *accept = NULL, *profile;
	char			*payload = NULL;

	switch (ce->ce_state) {
	case ORDER_NEW:
		if (order_profile(ce, &profile) != 0)
			return;
		payload = order_new_order_payload(ce, profile);
		/* A CA failing on "replaces" fails the same way again. */
		ce->ce_req = acme_new_order(ai, payload, ce->ce_sent_replaces ?
		    ACME_NEW_ORDER_5XX_TO_CALLER : 0, order_reply, ce);
		free(payload);
		return;
	case ORDER_AUTHZ:
	case ORDER_AUTHZ_POLL:
		ce->ce_req = acme_post_authz(ai, ce->ce_authz[ce->ce_authz_next],
		    NULL, order_reply, ce);
		return;
	case ORDER_FINALIZE:
		/* From here the CA may issue: other replicas must know. */
		if (cluster_enabled() && !ce->ce_order_shared) {
			order_share_order(ce);
			return;
		}
		if ((payload = order_finalize_payload(ce)) == NULL) {
			order_failf(ce, "creating the key and CSR failed");
			return;
		}
		url = ce->ce_finalize_url;
		break;
	case ORDER_ORDER_POLL:
		url = ce->ce_order_url;
		break;
	case ORDER_DOWNLOAD:
		url = ce->ce_alt_next > 0 ?
		    ce->ce_alternates[ce->ce_alt_next - 1] : ce->ce_cert_url;
		accept = "application/pem-certificate-chain";
		break;
	case ORDER_CHALLENGE:
	case ORDER_STORE:
	case ORDER_IDLE:
	case ORDER_BACKOFF:
	case ORDER_LEASE:
	case ORDER_SYNC:
	case ORDER_SHARE:
	case ORDER_READY_CHECK:
	case ORDER_DNS_PUBLISH:
	case ORDER_STATE_MAX:
		fatalx("%s: nothing to send in state %s", __func__,
		    order_state_name(ce->ce_state));
	}
	ce->ce_req = acme_post(ai, url, payload, accept, order_reply, ce);
	free(payload);
}

/* Poll again after Retry-After, or a delay growing from 250 ms. */
static void
order_poll_later(struct cert *ce, enum order_state state,
    const struct acme_reply *r)
{
	double	 delay;

	if (++ce->ce_polls > ORDER_POLL_MAX_TRIES) {
		order_failf(ce, "gave up after %d polls of %s", ce->ce_polls - 1,
		    state == ORDER_ORDER_POLL ? "the order" :
		    "an authorization");
		return;
	}
	delay = ORDER_POLL_FIRST_MS / 1000.0;
	for (int i = 1; i < ce->ce_polls && delay < ORDER_POLL_MAX_MS / 1000.0;
	    i++)
		delay *= 1.5;
	if (delay > ORDER_POLL_MAX_MS / 1000.0)
		delay = ORDER_POLL_MAX_MS / 1000.0;
	if (r->retry_after > 0) {
		if (r->retry_after - util_now() > ACME_RETRY_AFTER_MAX) {
			/* Not worth an open order slot: back off instead. */
			order_fail(ce, 0, r->retry_after, "the CA asks to poll "
			    "again only after more than an hour");
			return;
		}
		delay = (double)(r->retry_after - util_now());
	}
	order_set_state(ce, state);
	order_arm(ce, delay);
}

static const char *
order_status(const struct acme_reply *r)
{
	return json_string_value(json_object_get(r->json, "status"));
}

/* Move on after an order object answer: newOrder, finalize, or a poll. */
/* A string from the CA's JSON, or a stand-in for logs when it is absent. */
static const char *
order_json_str(json_t *o, const char *key)
{
	const char	*v = json_string_value(json_object_get(o, key));

	return v != NULL ? v : "?";
}

/*
 * Move on after an order object answer: newOrder, finalize, or a poll.
 * "processing" and "valid" only mean something once this order sent its
 * own CSR: before that, the key of that certificate is not ours.
 */
static void
order_on_order(struct cert *ce, const struct acme_reply *r)
{
	const char	*s = order_status(r), *v;
	int		 finalized = ce->ce_new_key != NULL;

	if (s == NULL) {
		order_failf(ce, "the CA's order has no status");
		return;
	}
	if ((strcmp(s, "valid") == 0 || strcmp(s, "processing") == 0) &&
	    !finalized) {
		order_failf(ce, "the CA's order is %s before we finalized it; "
		    "its key is not ours", s);
		return;
	}
	if (strcmp(s, "valid") == 0) {
		v = json_string_value(json_object_get(r->json, "certificate"));
		if (v == NULL) {
			order_failf(ce, "valid order without a certificate URL");
			return;
		}
		free(ce->ce_cert_url);
		ce->ce_cert_url = xstrdup(v);
		order_set_state(ce, ORDER_DOWNLOAD);
		order_drive(ce);
	} else if (strcmp(s, "ready") == 0 && (!finalized || ce->ce_resumed)) {
		/* A resumed "ready" order: its finalize never arrived. */
		if (ce->ce_resumed) {
			if ((v = json_string_value(json_object_get(r->json,
			    "finalize"))) == NULL) {
				order_failf(ce, "ready order without a "
				    "finalize URL");
				return;
			}
			free(ce->ce_finalize_url);
			ce->ce_finalize_url = xstrdup(v);
			ce->ce_resumed = 0;
		}
		order_set_state(ce, ORDER_FINALIZE);
		order_drive(ce);
	} else if (strcmp(s, "processing") == 0 || strcmp(s, "ready") == 0)
		order_poll_later(ce, ORDER_ORDER_POLL, r);
	else if (strcmp(s, "pending") == 0 && ce->ce_authz_next <
	    ce->ce_nauthz && ce->ce_state == ORDER_NEW) {
		order_set_state(ce, ORDER_AUTHZ);
		order_drive(ce);
	} else {
		json_t	*err = json_object_get(r->json, "error");

		order_failf(ce, "order is %s%s%s", s, err != NULL ? ": " : "",
		    err != NULL ? order_json_str(err, "detail") : "");
	}
}

/*
 * Whether the CA gave a URL we can request: one that parses, over http or
 * https.  Checked when it arrives, since no retry can mend it later.
 */
static int
order_url_ok(const char *url)
{
	struct evhttp_uri	*uri;
	const char		*scheme;
	int			 ok;

	if (url == NULL || (uri = evhttp_uri_parse(url)) == NULL)
		return 0;
	scheme = evhttp_uri_get_scheme(uri);
	ok = scheme != NULL && evhttp_uri_get_host(uri) != NULL &&
	    (strcmp(scheme, "https") == 0 || strcmp(scheme, "http") == 0);
	evhttp_uri_free(uri);
	return ok;
}

static int
order_take_new_order(struct cert *ce, const struct acme_reply *r)
{
	json_t		*authz, *v;
	const char	*fin;
	size_t		 i;

	authz = json_object_get(r->json, "authorizations");
	fin = json_string_value(json_object_get(r->json, "finalize"));
	if (!order_url_ok(r->location) || !order_url_ok(fin) ||
	    !json_is_array(authz) || json_array_size(authz) == 0 ||
	    json_array_size(authz) > 100)
		return -1;
	ce->ce_order_url = xstrdup(r->location);
	ce->ce_finalize_url = xstrdup(fin);
	ce->ce_nauthz = json_array_size(authz);
	ce->ce_authz = xcalloc(ce->ce_nauthz, sizeof(char *));
	json_array_foreach(authz, i, v) {
		if (!order_url_ok(json_string_value(v)))
			return -1;
		ce->ce_authz[i] = xstrdup(json_string_value(v));
	}
	return 0;
}

/* The challenge of the type ce answers (its challenge=, or its issuer's). */
static json_t *
order_find_challenge(const struct cert *ce, json_t *authz)
{
	json_t		*chall, *c;
	const char	*type, *want = conf_challenge_name(ce->ce_challenge);
	size_t		 i;

	chall = json_object_get(authz, "challenges");
	json_array_foreach(chall, i, c) {
		type = json_string_value(json_object_get(c, "type"));
		if (type != NULL && strcmp(type, want) == 0)
			return c;
	}
	return NULL;
}

/* The authorization is valid: its answer goes, the next one comes. */
static void
order_next_authz(struct cert *ce)
{
	order_token_clear(ce);
	order_alpn_clear(ce);
	order_dns_clear(ce);
	ce->ce_polls = 0;
	if (++ce->ce_authz_next < ce->ce_nauthz)
		order_set_state(ce, ORDER_AUTHZ);
	else
		order_set_state(ce, ORDER_FINALIZE);
	order_drive(ce);
}

static const char *
order_authz_error(const struct cert *ce, json_t *authz)
{
	json_t		*c = order_find_challenge(ce, authz);
	const char	*d;

	d = json_string_value(json_object_get(json_object_get(c, "error"),
	    "detail"));
	return d != NULL ? d : "no detail given";
}

/* Tell the CA the challenge is ready to be validated. */
static void
order_challenge_send(struct cert *ce)
{
	order_set_state(ce, ORDER_CHALLENGE);
	ce->ce_req = acme_post_authz(ce->ce_issuer, ce->ce_challenge_url, "{}",
	    order_reply, ce);
}

static void
order_ready_done(int rc, const char *why, void *arg)
{
	struct cert	*ce = arg;

	ready_cancel(ce->ce_ready);
	ce->ce_ready = NULL;
	if (rc == 0)
		order_challenge_send(ce);
	else
		order_failf(ce, "%s", why);
}

/*
 * Once our answer is in place (in every replica's zone, with several):
 * fetch it the way the CA will, from this host, and only then ask the CA
 * to validate, so that a responder not up yet (nginx starting after us)
 * costs a few seconds and no failed validation.
 */
void
order_challenge(struct cert *ce)
{
	char	*keyauth;

	/* dns-01: every authoritative server must answer the TXT value. */
	if (ce->ce_challenge == CHALLENGE_DNS_01 && ready_enabled() &&
	    ce->ce_authz_ident != NULL && order_dns_name(ce) != NULL) {
		ce->ce_ready = ready_start_dns(ce->ce_base, ce->ce_authz_ident,
		    order_dns_name(ce), order_dns_value(ce), ce->ce_dns_check,
		    ce->ce_dns_update, order_ready_done, ce);
		if (ce->ce_ready == NULL)
			order_challenge_send(ce);
		else
			order_set_state(ce, ORDER_READY_CHECK);
		return;
	}
	if (!ready_enabled() || (ce->ce_token == NULL &&
	    ce->ce_alpn_keyauth == NULL) || ce->ce_authz_ident == NULL) {
		order_challenge_send(ce);
		return;
	}
	if (ce->ce_alpn_keyauth != NULL)
		keyauth = xstrdup(ce->ce_alpn_keyauth);
	else
		keyauth = keys_key_authorization(ce->ce_token,
		    acme_issuer_thumbprint(ce->ce_issuer));
	/* A type ready.c has no check for yet goes to the CA unchecked. */
	ce->ce_ready = ready_start(ce->ce_base, ce->ce_challenge,
	    ce->ce_authz_ident, ce->ce_token, keyauth, order_ready_done, ce);
	free(keyauth);
	if (ce->ce_ready == NULL) {
		order_challenge_send(ce);
		return;
	}
	order_set_state(ce, ORDER_READY_CHECK);
}

/*
 * The dns-01 record is published (rc 0), or could not be: go on as
 * order_respond() does once an HTTP-01 token is in place.  No replica
 * needs to know of it: the CA asks the DNS, not this host.
 */
void
order_dns_published(struct cert *ce, int rc, const char *why)
{
	if (rc != 0) {
		order_failf(ce, "%s", why);
		return;
	}
	if (ce->ce_dns_triggered) {
		order_poll_later(ce, ORDER_AUTHZ_POLL, &(struct acme_reply){ 0 });
		return;
	}
	order_challenge(ce);
}

/*
 * Present the challenge and tell the CA to validate it: an HTTP-01 token
 * goes to both responders at once, a tls-alpn-01 certificate to the zone
 * and to ours (alpn.c) where it runs, a dns-01 record through the
 * issuer's publisher (order_dns.c), which calls order_dns_published()
 * when it is done.
 */
static void
order_respond(struct cert *ce, json_t *authz)
{
	json_t		*c = order_find_challenge(ce, authz);
	const char	*token, *url, *status;
	char		*keyauth, *why = NULL;
	int		 rc = 0;

	token = json_string_value(json_object_get(c, "token"));
	url = json_string_value(json_object_get(c, "url"));
	status = json_string_value(json_object_get(c, "status"));
	if (c == NULL || token == NULL || url == NULL || status == NULL) {
		order_failf(ce, "no usable %s challenge in %s",
		    conf_challenge_name(ce->ce_challenge),
		    ce->ce_authz[ce->ce_authz_next]);
		return;
	}
	if (!challenge_token_valid(token)) {
		order_failf(ce, "the CA sent a malformed challenge token");
		return;
	}
	keyauth = keys_key_authorization(token,
	    acme_issuer_thumbprint(ce->ce_issuer));
	if (ce->ce_challenge == CHALLENGE_DNS_01) {
		free(ce->ce_challenge_url);
		ce->ce_challenge_url = xstrdup(url);
		ce->ce_dns_triggered = strcmp(status, "pending") != 0;
		order_set_state(ce, ORDER_DNS_PUBLISH);
		order_dns_present(ce, ce->ce_authz_ident, keyauth);
		free(keyauth);
		return;
	}
	if (ce->ce_challenge == CHALLENGE_TLS_ALPN_01)
		rc = order_alpn_set(ce, keyauth, &why);
	else
		order_token_set(ce, token, keyauth);
	free(keyauth);
	if (rc == -1) {
		order_failf(ce, "%s", why);
		free(why);
		return;
	}
	if (strcmp(status, "pending") != 0) {
		/* Already triggered by an earlier, interrupted order. */
		order_poll_later(ce, ORDER_AUTHZ_POLL, &(struct acme_reply){ 0 });
		return;
	}
	free(ce->ce_challenge_url);
	ce->ce_challenge_url = xstrdup(url);
	/*
	 * The CA may ask any replica: all of them must have the token.  A
	 * tls-alpn-01 certificate is this host's alone, in its zone and its
	 * responder (README).
	 */
	if (cluster_enabled() && ce->ce_challenge == CHALLENGE_HTTP_01) {
		order_sync(ce);
		return;
	}
	order_challenge(ce);
}

static void
order_on_authz(struct cert *ce, const struct acme_reply *r)
{
	const char	*s = order_status(r);

	if (s != NULL && strcmp(s, "valid") == 0)
		order_next_authz(ce);
	else if (s != NULL && strcmp(s, "pending") == 0 &&
	    ce->ce_state == ORDER_AUTHZ) {
		/* What the readiness check sends as Host. */
		free(ce->ce_authz_ident);
		ce->ce_authz_ident = xstrdup(order_json_str(json_object_get(
		    r->json, "identifier"), "value"));
		order_respond(ce, r->json);
	} else if (s != NULL && (strcmp(s, "pending") == 0 ||
	    strcmp(s, "processing") == 0))
		order_poll_later(ce, ORDER_AUTHZ_POLL, r);
	else if (s != NULL && strcmp(s, "invalid") == 0)
		order_failf(ce, "authorization for %s failed: %s",
		    order_json_str(json_object_get(r->json, "identifier"),
		    "value"), order_authz_error(ce, r->json));
	else
		order_failf(ce, "authorization is %s", s != NULL ? s :
		    "without status");
}

static int
order_chain_matches(const char *pem, const char *name)
{
	BIO		*bio;
	X509		*x;
	char		 cn[256];
	int		 found = 0;

	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
		return 0;
	while (!found && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (X509_NAME_get_text_by_NID(X509_get_issuer_name(x),
		    NID_commonName, cn, sizeof(cn)) > 0 && strcmp(cn, name) == 0)
			found = 1;
		X509_free(x);
	}
	ERR_clear_error();
	BIO_free(bio);
	return found;
}

/*
 * The CA issued the certificate but state_path refused it (full, read-only,
 * gone).  Ordering again would issue it a second time, so the chain and its
 * key stay in memory, nginx gets them from the segment at once, and the
 * write is retried with backoff until the disk takes it.  Only a restart
 * in between loses them.
 */
void
order_store_failed(struct cert *ce, const char *cause)
{
	double	 delay;
	int	 n;

	if (ce->ce_order_open) {
		/* The CA is done with this order: free its slot. */
		ce->ce_order_open = 0;
		acme_order_close(ce->ce_issuer);
	}
	if (ce->ce_store_tries++ == 0)
		order_publish(ce, ce->ce_idents, ce->ce_nidents,
		    ce->ce_stored_chain, ce->ce_new_key, ce->ce_stored_nb,
		    ce->ce_stored_na);
	n = ce->ce_store_tries > 9 ? 9 : ce->ce_store_tries - 1;
	delay = (double)ORDER_STORE_RETRY_MIN * (double)(1 << n);
	if (delay > ORDER_STORE_RETRY_MAX)
		delay = ORDER_STORE_RETRY_MAX;
	delay = util_jitter(delay, 0.2);

	free(ce->ce_last_error);
	xasprintf(&ce->ce_last_error, "issued, but storing it in %s failed: "
	    "%s", acme_issuer_state_path(ce->ce_issuer), cause);
	ce->ce_last_error_at = util_now();
	log_warnx("certificate \"%s\": %s; serving it from memory and "
	    "retrying the write in %.0fs (try %d)", ce->ce_id,
	    ce->ce_last_error, delay, ce->ce_store_tries);
	order_arm(ce, delay);
}

static void
order_stored(int rc, const char *cause, void *arg)
{
	struct cert	*ce = arg;
	char		 until[32], na[UTIL_TIME_LEN];
	int		 renewal = ce->ce_have;
	time_t		 renew_at;

	ce->ce_job = NULL;
	if (rc == -1) {
		order_store_failed(ce, cause);
		return;
	}
	store_remove_pending(acme_issuer_state_path(ce->ce_issuer), ce->ce_id);
	if (ce->ce_store_tries > 0)
		log_info("certificate \"%s\": stored in %s after %d failed "
		    "write%s", ce->ce_id, acme_issuer_state_path(ce->ce_issuer),
		    ce->ce_store_tries, ce->ce_store_tries > 1 ? "s" : "");
	ce->ce_have = 1;
	ce->ce_not_before = ce->ce_stored_nb;
	ce->ce_not_after = ce->ce_stored_na;
	order_chain_digest(ce->ce_stored_chain, ce->ce_chain_md);
	order_ari_adopt(ce, ce->ce_stored_chain, ce->ce_stored_leaf);
	order_publish(ce, ce->ce_idents, ce->ce_nidents, ce->ce_stored_chain,
	    ce->ce_new_key, ce->ce_not_before, ce->ce_not_after);
	ce->ce_failures = 0;
	ce->ce_lost_reordered = 0;
	free(ce->ce_last_error);
	ce->ce_last_error = NULL;
	order_log_time(until, sizeof(until), ce->ce_not_after);
	log_info("certificate \"%s\" issued, valid until %s", ce->ce_id, until);
	util_time_rfc3339(ce->ce_not_after, na, sizeof(na));
	feed_emit(renewal ? "renewed" : "issued", "{s:s, s:s, s:s}",
	    "certificate", ce->ce_id, "issuer", acme_issuer_name(ce->ce_issuer),
	    "not_after", na);
	metrics_order_outcome(acme_issuer_name(ce->ce_issuer), renewal ?
	    METRICS_RENEWED : METRICS_ISSUED);
	renew_at = ce->ce_stored_renew;
	order_reset(ce);
	order_cluster_done(ce);
	order_schedule_renewal(ce, renew_at);
}

/* Hand the chain kept in ce_stored_chain and its key to the writer. */
void
order_store_write(struct cert *ce)
{
	struct cert_meta	 meta;

	memset(&meta, 0, sizeof(meta));
	meta.cm_issued = util_now();
	meta.cm_not_before = ce->ce_stored_nb;
	meta.cm_not_after = ce->ce_stored_na;
	meta.cm_url = ce->ce_cert_url;
	meta.cm_idents = ce->ce_idents;
	meta.cm_nidents = ce->ce_nidents;
	meta.cm_key = ce->ce_key;
	ce->ce_job = writer_save_cert_x509(acme_issuer_state_path(
	    ce->ce_issuer), ce->ce_id, ce->ce_stored_chain, ce->ce_stored_leaf,
	    ce->ce_new_key, &meta, order_stored, ce);
}

/* Check what the CA sent, keep it, and write it to state_path. */
static void
order_store(struct cert *ce, const char *chain)
{
	X509	*leaf;
	time_t	 nb, na;

	if (ce->ce_new_key == NULL) {
		order_failf(ce, "a certificate arrived for no key of ours");
		return;
	}
	/* The only parse of it: the writer and ARI take this one. */
	if ((leaf = store_chain_leaf(chain, &nb, &na)) == NULL) {
		order_failf(ce, "the CA sent a certificate that does not parse");
		return;
	}
	X509_free(ce->ce_stored_leaf);
	ce->ce_stored_leaf = leaf;
	free(ce->ce_stored_chain);
	ce->ce_stored_chain = xstrdup(chain);
	ce->ce_stored_nb = nb;
	ce->ce_stored_na = na;
	/* Redis first: only a certificate the fence accepts is ours to keep. */
	if (cluster_enabled()) {
		order_share_cert(ce);
		return;
	}
	order_set_state(ce, ORDER_STORE);
	order_store_write(ce);
}

/* Fetch the next alternate chain, or settle for the default one. */
static void
order_next_chain(struct cert *ce)
{
	char	*fallback;

	if (ce->ce_alternates != NULL &&
	    ce->ce_alternates[ce->ce_alt_next] != NULL) {
		ce->ce_alt_next++;
		order_drive(ce);
		return;
	}
	log_info("certificate \"%s\": no chain is issued by \"%s\"; keeping "
	    "the default chain", ce->ce_id,
	    acme_issuer_preferred_chain(ce->ce_issuer));
	fallback = ce->ce_default_chain;
	ce->ce_default_chain = NULL;
	order_store(ce, fallback);
	free(fallback);
}

/*
 * A chain arrived.  Without preferred_chain, or when it matches, store it.
 * Otherwise try each Link rel="alternate" in turn, and fall back to the
 * default chain, which is just as valid, when none matches.  An alternate
 * that fails to download only counts as one that does not match: the
 * certificate is issued already and must not be thrown away.
 */
static void
order_on_chain(struct cert *ce, const struct acme_reply *r)
{
	const char	*want = acme_issuer_preferred_chain(ce->ce_issuer);
	int		 pem;

	pem = r->status == 200 &&
	    strstr(r->body, "-----BEGIN CERTIFICATE-----") != NULL;
	if (ce->ce_alt_next > 0 && !pem) {
		log_debug("certificate \"%s\": alternate chain %s unusable",
		    ce->ce_id, ce->ce_alternates[ce->ce_alt_next - 1]);
		order_next_chain(ce);
		return;
	}
	if (r->status != 200) {
		order_fail_reply(ce, "certificate download", r);
		return;
	}
	if (!pem) {
		order_failf(ce, "the CA's certificate download is not PEM");
		return;
	}
	if (want == NULL || order_chain_matches(r->body, want)) {
		order_store(ce, r->body);
		return;
	}
	if (ce->ce_alt_next == 0) {
		ce->ce_default_chain = xstrdup(r->body);
		ce->ce_alternates = http_response_links(r->http, "alternate");
	}
	order_next_chain(ce);
}

/*
 * Whether the CA may have failed on "replaces" rather than on the order:
 * a refusal that names it (RFC 9773 section 5: alreadyReplaced, or a CA
 * that finds the CertID wrong), or an internal error.  Pebble 2.6 answers
 * 500 for every certificate whose serial has a leading zero byte: it
 * looks the CertID's serial up without it.  503 and 429 say "later".
 */
static int
order_replaces_suspect(const struct acme_reply *r)
{
	if (r->status >= 500)
		return r->status != 503;
	if (r->status < 400 || r->status == 429)
		return 0;
	return acme_problem_is(r, "alreadyReplaced") ||
	    (r->problem_detail != NULL &&
	    strcasestr(r->problem_detail, "replace") != NULL);
}

/*
 * The CA refused a newOrder with "replaces", or failed on it: order again
 * at once without it, once per attempt.  A renewal is worth more than the
 * hint; an order that fails again fails as any other.
 */
static int
order_replaces_refused(struct cert *ce, const struct acme_reply *r)
{
	char	*desc;

	if (!ce->ce_sent_replaces || !order_replaces_suspect(r))
		return 0;
	desc = acme_reply_describe(r);
	log_warnx("certificate \"%s\": newOrder refused \"replaces\" (%s); "
	    "ordering again without it", ce->ce_id, desc);
	free(desc);
	ce->ce_no_replaces = 1;
	return 1;
}

static void
order_reply(const struct acme_reply *r, void *arg)
{
	struct cert	*ce = arg;

	ce->ce_req = NULL;
	switch (ce->ce_state) {
	case ORDER_NEW:
		ce->ce_order_open = r->status == 201;
		if (order_replaces_refused(ce, r)) {
			order_drive(ce);
			return;
		}
		if (r->status != 201 || !json_is_object(r->json)) {
			order_fail_reply(ce, "newOrder", r);
			return;
		}
		if (order_take_new_order(ce, r) == -1) {
			order_failf(ce, "newOrder: malformed order object "
			    "(Location %s)", r->location != NULL ? r->location :
			    "missing");
			return;
		}
		order_on_order(ce, r);
		break;
	case ORDER_AUTHZ:
	case ORDER_AUTHZ_POLL:
		if (r->status != 200 || !json_is_object(r->json)) {
			order_fail_reply(ce, "authorization", r);
			return;
		}
		order_on_authz(ce, r);
		break;
	case ORDER_CHALLENGE:
		if (r->status != 200) {
			order_fail_reply(ce, "challenge", r);
			return;
		}
		order_poll_later(ce, ORDER_AUTHZ_POLL, r);
		break;
	case ORDER_FINALIZE:
		if (r->status == 403 && acme_problem_is(r, "orderNotReady")) {
			/* Not finalized: a later "ready" sends a new CSR. */
			EVP_PKEY_free(ce->ce_new_key);
			ce->ce_new_key = NULL;
			order_poll_later(ce, ORDER_ORDER_POLL, r);
			return;
		}
		/* FALLTHROUGH */
	case ORDER_ORDER_POLL:
		if (r->status != 200 || !json_is_object(r->json)) {
			order_fail_reply(ce, ce->ce_state == ORDER_FINALIZE ?
			    "finalize" : "order", r);
			return;
		}
		order_on_order(ce, r);
		break;
	case ORDER_DOWNLOAD:
		order_on_chain(ce, r);
		break;
	case ORDER_STORE:
	case ORDER_IDLE:
	case ORDER_BACKOFF:
	case ORDER_LEASE:
	case ORDER_SYNC:
	case ORDER_SHARE:
	case ORDER_READY_CHECK:
	case ORDER_DNS_PUBLISH:
	case ORDER_STATE_MAX:
		fatalx("%s: reply in state %s", __func__,
		    order_state_name(ce->ce_state));
	}
}

/* Revocation (RFC 8555 section 7.6), asked through the control API. */

/* {"certificate": base64url(DER of the leaf), "reason": code} */
static char *
order_revoke_payload(const char *chain, int reason, char **cause)
{
	BIO		*bio;
	X509		*x;
	unsigned char	*der = NULL;
	char		*b64 = NULL, *text = NULL;
	json_t		*j;
	int		 len;

	if ((bio = BIO_new_mem_buf(chain, -1)) == NULL)
		fatalx("%s: BIO_new_mem_buf", __func__);
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (x == NULL || (len = i2d_X509(x, &der)) <= 0) {
		ERR_clear_error();
		X509_free(x);
		xasprintf(cause, "the stored certificate does not parse");
		return NULL;
	}
	X509_free(x);
	b64 = b64url_encode(der, (size_t)len);
	OPENSSL_free(der);
	j = json_pack("{s:s, s:i}", "certificate", b64, "reason", reason);
	if (j == NULL || (text = json_dumps(j, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	json_decref(j);
	free(b64);
	return text;
}

static void
order_revoked(const struct acme_reply *r, void *arg)
{
	struct cert	*ce = arg;
	char		*desc, *why;

	ce->ce_revoke_req = NULL;
	if (r->status != 200) {
		desc = acme_reply_describe(r);
		xasprintf(&why, "revokeCert: %s", desc);
		log_warnx("certificate \"%s\": %s", ce->ce_id, why);
		ce->ce_revoke_cb(-1, why, ce->ce_revoke_arg);
		free(why);
		free(desc);
		return;
	}
	log_info("certificate \"%s\" revoked (%s); ordering a replacement",
	    ce->ce_id, ce->ce_revoke_reason);
	feed_emit("revoked", "{s:s, s:s, s:s}", "certificate", ce->ce_id,
	    "issuer", acme_issuer_name(ce->ce_issuer), "reason",
	    ce->ce_revoke_reason);
	metrics_order_outcome(acme_issuer_name(ce->ce_issuer), METRICS_REVOKED);
	/*
	 * An order under way replaces it anyway.  A pending order left from
	 * before is not resumed: its key may be the compromised one.
	 */
	if (ce->ce_state == ORDER_IDLE || ce->ce_state == ORDER_BACKOFF) {
		store_remove_pending(acme_issuer_state_path(ce->ce_issuer),
		    ce->ce_id);
		order_begin(ce);
	}
	ce->ce_revoke_cb(0, NULL, ce->ce_revoke_arg);
}

/*
 * Ask the CA to revoke the certificate stored for ce; cb runs exactly
 * once, unless order_revoke_cancel() comes first: with 0, with -1 when
 * the CA refused, or with -2 when ce is being freed.  Returns 0, -2 when
 * the certificate is in no state to be revoked (nothing stored yet, a
 * new one being stored, a revocation under way), -1 on other errors.  reason is an RFC 5280
 * CRLReason code, name its name (a static string).
 */
int
order_revoke(struct cert *ce, int reason, const char *name,
    order_revoke_cb cb, void *arg, char **cause)
{
	struct cert_meta	 meta;
	EVP_PKEY		*key = NULL;
	char			*chain = NULL, *payload;
	const char		*url = acme_issuer_revoke_url(ce->ce_issuer);
	int			 rc;

	if (url == NULL) {
		xasprintf(cause, "the CA offers no revokeCert");
		return -1;
	}
	/* While a new one is stored, nginx may serve it and not the file's. */
	if (ce->ce_revoke_req != NULL || ce->ce_state == ORDER_STORE ||
	    ce->ce_state == ORDER_SHARE) {
		xasprintf(cause, ce->ce_revoke_req != NULL ? "a revocation "
		    "is already under way" : "a new certificate is being "
		    "stored: revoke it once it is");
		return -2;
	}
	memset(&meta, 0, sizeof(meta));
	rc = store_load_cert(acme_issuer_state_path(ce->ce_issuer), ce->ce_id,
	    &chain, &key, &meta, cause);
	EVP_PKEY_free(key);
	store_meta_clear(&meta);
	if (rc == 1) {
		xasprintf(cause, "no certificate is stored yet");
		return -2;
	}
	if (rc != 0)
		return -1;
	payload = order_revoke_payload(chain, reason, cause);
	free(chain);
	if (payload == NULL)
		return -1;
	ce->ce_revoke_reason = name;
	ce->ce_revoke_cb = cb;
	ce->ce_revoke_arg = arg;
	ce->ce_revoke_req = acme_post(ce->ce_issuer, url, payload, NULL,
	    order_revoked, ce);
	free(payload);
	return 0;
}

void
order_revoke_cancel(struct cert *ce)
{
	if (ce->ce_revoke_req != NULL)
		acme_req_cancel(ce->ce_revoke_req);
	ce->ce_revoke_req = NULL;
}

int
order_revoking(const struct cert *ce)
{
	return ce->ce_revoke_req != NULL;
}
