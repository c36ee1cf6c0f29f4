/*
 * One ACME issuer (RFC 8555): its directory, its account, and the pacing
 * of every request sent to it.
 *
 * All requests of an issuer go through one queue.  A request leaves the
 * queue when fewer than ACME_MAX_INFLIGHT are in flight and the token
 * bucket of request_rate allows it.  A signed request takes a nonce from
 * the pool; when the pool is empty it first asks newNonce (HEAD), inside
 * the same slot.  Retries stay inside the request: badNonce is resent at
 * once with the fresh nonce its answer carries, rateLimited and 503 wait
 * for Retry-After, and network errors back off with jitter.  Only the
 * final outcome reaches the caller.
 *
 * Until the account is ready, only bootstrap requests (directory, nonce,
 * newAccount) leave the queue; orders can queue from the start.
 *
 * Account operations (key rollover, deactivation) are sent alone: once
 * one is queued no new order opens, and it leaves when nothing else is
 * in flight (a rollover: also once the open orders have closed, see
 * acme_account_send()); nothing leaves while it is on the wire.  A
 * request signs when it leaves, so every request queued behind a
 * rollover is signed with the key the CA has at that moment.
 */
#include <sys/time.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/evp.h>

#include "sidecar.h"

#define ACME_URN	"urn:ietf:params:acme:error:"

enum acme_req_kind {
	AREQ_GET,		/* plain GET: the directory */
	AREQ_POST_KID,		/* signed with the account URL */
	AREQ_POST_JWK,		/* signed with the public key: newAccount */
};

enum acme_req_state {
	AREQ_QUEUED,
	AREQ_NONCE,		/* HEAD newNonce in flight */
	AREQ_SENT,
	AREQ_WAITING,		/* retry timer armed */
	AREQ_STATE_MAX
};

static const char *acme_req_state_names[AREQ_STATE_MAX] = {
	"queued", "nonce", "sent", "waiting"
};

struct acme_req {
	struct acme_issuer	*ar_issuer;
	enum acme_req_kind	 ar_kind;
	enum acme_req_state	 ar_state;
	int			 ar_bootstrap;
	int			 ar_no_retry;	/* caller handles failures */
	int			 ar_5xx_to_caller; /* ... of the server's */
	int			 ar_new_order;	/* URL is the directory's */
	int			 ar_opened;	/* holds an open-order slot */
	int			 ar_authz;	/* to an authorization or challenge */
	int			 ar_ari;	/* GET renewalInfo/CertID */
	int			 ar_account_tries;	/* accountDoesNotExist */
	int			 ar_exclusive;	/* alone on the wire */
	int			 ar_after_orders; /* ... once no order is open */
	EVP_PKEY		*ar_key;	/* signs instead of the account's */
	char			*ar_kid;	/* the account it was signed for */
	char			*ar_url;
	char			*ar_payload;	/* NULL: POST-as-GET */
	char			*ar_accept;
	acme_cb			 ar_cb;
	void			*ar_arg;
	int			 ar_badnonce_tries;
	int			 ar_net_tries;
	int			 ar_rate_tries;
	double			 ar_sent_at;	/* monotonic, for metrics */
	struct http_request	*ar_http;
	struct event		*ar_timer;
	TAILQ_ENTRY(acme_req)	 ar_entry;
};
TAILQ_HEAD(acme_reqs, acme_req);

struct acme_issuer {
	struct event_base	*ai_base;
	char			*ai_name;
	struct conf_issuer	*ai_conf;	/* our own copy */
	enum issuer_state	 ai_state;
	SSL_CTX			*ai_ssl;
	struct http_pool	*ai_http;
	struct nonce_pool	*ai_nonces;

	/* The directory (RFC 8555 section 7.1.1). */
	char			*ai_new_nonce;
	char			*ai_new_account;
	char			*ai_new_order;
	char			*ai_revoke_cert;	/* NULL if not offered */
	char			*ai_tos;
	int			 ai_eab_required;
	char			*ai_renewal_info;	/* RFC 9773, or NULL */
	char			*ai_key_change;		/* NULL if not offered */
	json_t			*ai_profiles;	/* meta.profiles, or NULL */

	EVP_PKEY		*ai_key;
	char			*ai_kid;
	char			*ai_thumbprint;

	/* The account at the CA (RFC 8555 7.3), and what is done to it. */
	EVP_PKEY		*ai_next_key;	/* rollover, or its recovery */
	struct acme_req		*ai_excl;	/* keyChange or deactivation */
	struct acme_reqs	 ai_excl_queue;
	acme_account_cb		 ai_acct_cb;
	void			*ai_acct_arg;
	const char		*ai_acct_op;	/* "key rollover", ... or NULL */
	char			*ai_acct_why;	/* keyChange's failure */
	json_t			*ai_ca_contact;	/* as the CA has it, or NULL */
	json_t			*ai_contact_sent; /* by the update in flight */
	char			*ai_ca_status;	/* "valid", ... or NULL */
	struct acme_req		*ai_contact_req;
	char			*ai_deactivated; /* its URL, when deactivated */
	struct event		*ai_fail_ev;	/* fails what is queued */

	struct acme_reqs	 ai_boot_queue;
	struct acme_reqs	 ai_queue;	/* orders under way */
	struct acme_reqs	 ai_order_queue; /* newOrder, waiting for a slot */
	unsigned int		 ai_inflight;
	unsigned int		 ai_inflight_new_orders;
	unsigned int		 ai_inflight_authz;
	unsigned int		 ai_open_orders;
	double			 ai_tokens;
	struct event		*ai_pace_ev;
	struct event		*ai_boot_ev;
	struct acme_req		*ai_boot_req;	/* directory or newAccount */
	int			 ai_boot_failures;
	int			 ai_closing;	/* being freed: send nothing */

	/* With a cluster: the fleet's account (acme_fleet_account()). */
	struct cluster_account_op *ai_fleet_op;
	struct cluster_lease	*ai_fleet_lease;	/* making it */
	double			 ai_refilled_at;	/* monotonic seconds */
};

static const char *issuer_state_names[ISSUER_STATE_MAX] = {
	"directory", "account", "ready", "backoff", "deactivated"
};

static void	 acme_dispatch(struct acme_issuer *);
static void	 acme_req_set_state(struct acme_req *, enum acme_req_state);
static void	 acme_boot(struct acme_issuer *);
static void	 acme_req_send(struct acme_req *);
static void	 acme_account_local(struct acme_issuer *);
static void	 acme_set_ready(struct acme_issuer *);
static void	 acme_contact_check(struct acme_issuer *);
static void	 acme_account_reactivate(struct acme_issuer *);
static int	 acme_rollover_recover(struct acme_issuer *);
static int	 acme_contact_keep(struct acme_issuer *,
		    const struct acme_reply *);
static void	 acme_fail_queued(int, short, void *);

static void
acme_set_state(struct acme_issuer *ai, enum issuer_state state)
{
	if (state >= ISSUER_STATE_MAX)
		fatalx("%s: bad issuer state %d", __func__, state);
	log_debug("issuer \"%s\": %s -> %s", ai->ai_name,
	    issuer_state_names[ai->ai_state], issuer_state_names[state]);
	ai->ai_state = state;
}

static int
acme_str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/*
 * Settings that need a new account or a new connection pool.  Everything
 * else (contact aside) can change under a running issuer.
 */
int
acme_issuer_same_conf(const struct acme_issuer *ai, const struct conf_issuer *ci)
{
	const struct conf_issuer *a = ai->ai_conf;

	return acme_str_eq(a->ci_uri, ci->ci_uri) &&
	    acme_str_eq(a->ci_state_path, ci->ci_state_path) &&
	    acme_str_eq(a->ci_trusted_cert, ci->ci_trusted_cert) &&
	    a->ci_ssl_verify == ci->ci_ssl_verify &&
	    acme_str_eq(a->ci_account_key_file, ci->ci_account_key_file) &&
	    a->ci_account_key_type == ci->ci_account_key_type &&
	    acme_str_eq(a->ci_eab_kid, ci->ci_eab_kid) &&
	    a->ci_request_timeout == ci->ci_request_timeout;
}

/*
 * A reload: a changed contact goes to the CA (acme_contact_check()), and
 * a deactivated issuer whose account.deactivated was removed registers a
 * new account.
 */
void
acme_issuer_update_conf(struct acme_issuer *ai, const struct conf_issuer *ci)
{
	conf_issuer_free(ai->ai_conf);
	ai->ai_conf = conf_issuer_dup(ci);
	ai->ai_name = ai->ai_conf->ci_name;	/* the old copy is gone */
	if (ai->ai_state == ISSUER_READY)
		acme_contact_check(ai);
	else if (ai->ai_state == ISSUER_DEACTIVATED)
		acme_account_reactivate(ai);
}

static void
acme_pace_cb(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	acme_dispatch(arg);
}

static void
acme_boot_cb(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	acme_boot(arg);
}

struct acme_issuer *
acme_issuer_new(struct event_base *base, struct evdns_base *dns,
    const struct conf_issuer *ci)
{
	struct acme_issuer	*ai;
	char			*cause = NULL;

	ai = xcalloc(1, sizeof(*ai));
	ai->ai_base = base;
	ai->ai_conf = conf_issuer_dup(ci);
	ai->ai_name = ai->ai_conf->ci_name;
	TAILQ_INIT(&ai->ai_boot_queue);
	TAILQ_INIT(&ai->ai_queue);
	TAILQ_INIT(&ai->ai_order_queue);
	TAILQ_INIT(&ai->ai_excl_queue);
	ai->ai_nonces = nonce_pool_new();
	ai->ai_tokens = ci->ci_burst > 0 ? ci->ci_burst : 1;
	ai->ai_refilled_at = util_monotonic();
	ai->ai_pace_ev = evtimer_new(base, acme_pace_cb, ai);
	ai->ai_boot_ev = evtimer_new(base, acme_boot_cb, ai);
	ai->ai_fail_ev = evtimer_new(base, acme_fail_queued, ai);
	if (ai->ai_pace_ev == NULL || ai->ai_boot_ev == NULL ||
	    ai->ai_fail_ev == NULL)
		fatalx("%s: evtimer_new", __func__);

	ai->ai_ssl = http_ssl_ctx(ci->ci_trusted_cert, ci->ci_ssl_verify,
	    &cause);
	if (ai->ai_ssl == NULL) {
		/* conf -t checked the file; it vanished since. */
		log_warnx("issuer \"%s\": %s", ai->ai_name, cause);
		free(cause);
		conf_issuer_free(ai->ai_conf);
		nonce_pool_free(ai->ai_nonces);
		event_free(ai->ai_pace_ev);
		event_free(ai->ai_boot_ev);
		event_free(ai->ai_fail_ev);
		free(ai);
		return NULL;
	}
	ai->ai_http = http_pool_new(base, dns, ai->ai_ssl, ACME_MAX_INFLIGHT,
	    ci->ci_request_timeout);
	ai->ai_state = ISSUER_DIRECTORY;
	acme_boot(ai);
	return ai;
}

static void
acme_req_free(struct acme_req *ar)
{
	if (ar->ar_http != NULL)
		http_request_cancel(ar->ar_http);
	if (ar->ar_timer != NULL)
		event_free(ar->ar_timer);
	EVP_PKEY_free(ar->ar_key);
	free(ar->ar_kid);
	free(ar->ar_url);
	free(ar->ar_payload);
	free(ar->ar_accept);
	free(ar);
}

static void
acme_queue_free(struct acme_reqs *q)
{
	struct acme_req	*ar;

	while ((ar = TAILQ_FIRST(q)) != NULL) {
		TAILQ_REMOVE(q, ar, ar_entry);
		acme_req_free(ar);
	}
}

/*
 * Requests that are in flight or waiting are owned by their callers'
 * handles; the caller cancels them before freeing the issuer.  Only the
 * issuer's own bootstrap requests may remain, and they are on its queues.
 */
void
acme_issuer_free(struct acme_issuer *ai)
{
	if (ai == NULL)
		return;
	ai->ai_closing = 1;
	if (ai->ai_boot_req != NULL)
		acme_req_cancel(ai->ai_boot_req);
	if (ai->ai_contact_req != NULL)
		acme_req_cancel(ai->ai_contact_req);
	if (ai->ai_excl != NULL)
		acme_req_cancel(ai->ai_excl);
	if (ai->ai_acct_cb != NULL)
		ai->ai_acct_cb(-1, "the issuer stopped (a reload changed or "
		    "removed it)", ai->ai_acct_arg);
	cluster_account_cancel(ai->ai_fleet_op);
	cluster_lease_release(ai->ai_fleet_lease);
	acme_queue_free(&ai->ai_boot_queue);
	acme_queue_free(&ai->ai_queue);
	acme_queue_free(&ai->ai_order_queue);
	acme_queue_free(&ai->ai_excl_queue);
	event_free(ai->ai_pace_ev);
	event_free(ai->ai_boot_ev);
	event_free(ai->ai_fail_ev);
	http_pool_free(ai->ai_http);
	SSL_CTX_free(ai->ai_ssl);
	nonce_pool_free(ai->ai_nonces);
	free(ai->ai_new_nonce);
	free(ai->ai_new_account);
	free(ai->ai_new_order);
	free(ai->ai_revoke_cert);
	free(ai->ai_tos);
	free(ai->ai_renewal_info);
	free(ai->ai_key_change);
	json_decref(ai->ai_profiles);
	EVP_PKEY_free(ai->ai_next_key);
	json_decref(ai->ai_ca_contact);
	json_decref(ai->ai_contact_sent);
	free(ai->ai_acct_why);
	free(ai->ai_ca_status);
	free(ai->ai_deactivated);
	EVP_PKEY_free(ai->ai_key);
	free(ai->ai_kid);
	free(ai->ai_thumbprint);
	conf_issuer_free(ai->ai_conf);
	free(ai);
}

/*
 * Send nothing more: the issuer's certificates are about to cancel their
 * requests, and each cancel would otherwise let a queued one leave.
 */
void
acme_issuer_close(struct acme_issuer *ai)
{
	ai->ai_closing = 1;
}

const char *
acme_issuer_name(const struct acme_issuer *ai)
{
	return ai->ai_name;
}

enum issuer_state
acme_issuer_state(const struct acme_issuer *ai)
{
	return ai->ai_state;
}

const char *
acme_issuer_state_name(enum issuer_state state)
{
	if (state < 0 || state >= ISSUER_STATE_MAX)
		return "unknown";
	return issuer_state_names[state];
}

const char *
acme_issuer_uri(const struct acme_issuer *ai)
{
	return ai->ai_conf->ci_uri;
}

/* The account URL (the "kid"), or NULL before the account is known. */
const char *
acme_issuer_account_url(const struct acme_issuer *ai)
{
	return ai->ai_kid;
}

const char *
acme_issuer_thumbprint(const struct acme_issuer *ai)
{
	return ai->ai_thumbprint;
}

const char *
acme_issuer_state_path(const struct acme_issuer *ai)
{
	return ai->ai_conf->ci_state_path;
}

const char *
acme_issuer_revoke_url(const struct acme_issuer *ai)
{
	return ai->ai_revoke_cert;
}

const char *
acme_issuer_preferred_chain(const struct acme_issuer *ai)
{
	return ai->ai_conf->ci_preferred_chain;
}

/* The directory's renewalInfo (RFC 9773), or NULL: none, or not loaded. */
const char *
acme_issuer_renewal_info(const struct acme_issuer *ai)
{
	return ai->ai_state == ISSUER_READY ? ai->ai_renewal_info : NULL;
}

const char *
acme_issuer_profile(const struct acme_issuer *ai, int *require)
{
	*require = ai->ai_conf->ci_profile_require;
	return ai->ai_conf->ci_profile;
}

/* common_name_in_csr, as of the latest reload. */
int
acme_issuer_cn_in_csr(const struct acme_issuer *ai)
{
	return ai->ai_conf->ci_cn_in_csr;
}

/*
 * Whether the directory's meta.profiles names name (an object of names to
 * descriptions, draft-ietf-acme-profiles).  Asked when newOrder leaves,
 * so the directory is known by then.
 */
int
acme_issuer_profile_listed(const struct acme_issuer *ai, const char *name)
{
	return ai->ai_profiles != NULL &&
	    json_object_get(ai->ai_profiles, name) != NULL;
}

/* Requests. */

/* Requests are many: their transitions log only at -v. */
static void
acme_req_set_state(struct acme_req *ar, enum acme_req_state state)
{
	if (state >= AREQ_STATE_MAX)
		fatalx("%s: bad request state %d", __func__, state);
	if (log_verbose())
		log_debug("request %p %s: %s -> %s", (void *)ar, ar->ar_url,
		    acme_req_state_names[ar->ar_state],
		    acme_req_state_names[state]);
	ar->ar_state = state;
}

static struct acme_req *
acme_req_new(struct acme_issuer *ai, enum acme_req_kind kind, const char *url,
    const char *payload, const char *accept, acme_cb cb, void *arg)
{
	struct acme_req	*ar;

	ar = xcalloc(1, sizeof(*ar));
	ar->ar_issuer = ai;
	ar->ar_kind = kind;
	ar->ar_url = xstrdup(url);
	ar->ar_payload = payload != NULL ? xstrdup(payload) : NULL;
	ar->ar_accept = accept != NULL ? xstrdup(accept) : NULL;
	ar->ar_cb = cb;
	ar->ar_arg = arg;
	return ar;
}

static struct acme_reqs *
acme_req_queue(struct acme_req *ar)
{
	struct acme_issuer	*ai = ar->ar_issuer;

	if (ar->ar_bootstrap)
		return &ai->ai_boot_queue;
	if (ar->ar_exclusive)
		return &ai->ai_excl_queue;
	if (ar->ar_new_order && !ar->ar_opened)
		return &ai->ai_order_queue;
	return &ai->ai_queue;
}

static void
acme_enqueue(struct acme_req *ar, int at_head)
{
	acme_req_set_state(ar, AREQ_QUEUED);
	if (at_head)
		TAILQ_INSERT_HEAD(acme_req_queue(ar), ar, ar_entry);
	else
		TAILQ_INSERT_TAIL(acme_req_queue(ar), ar, ar_entry);
	acme_dispatch(ar->ar_issuer);
}

struct acme_req *
acme_post(struct acme_issuer *ai, const char *url, const char *payload,
    const char *accept, acme_cb cb, void *arg)
{
	struct acme_req	*ar;

	ar = acme_req_new(ai, AREQ_POST_KID, url, payload, accept, cb, arg);
	acme_enqueue(ar, 0);
	return ar;
}

/*
 * newOrder's URL comes from the directory, which may not be loaded yet;
 * the request learns it when it leaves the queue, after bootstrap.  With
 * ACME_NEW_ORDER_5XX_TO_CALLER, a server error is not retried as sent:
 * the caller changes the order first.
 */
struct acme_req *
acme_new_order(struct acme_issuer *ai, const char *payload, int flags,
    acme_cb cb, void *arg)
{
	struct acme_req	*ar;

	ar = acme_req_new(ai, AREQ_POST_KID, "", payload, NULL, cb, arg);
	ar->ar_new_order = 1;
	ar->ar_5xx_to_caller = (flags & ACME_NEW_ORDER_5XX_TO_CALLER) != 0;
	acme_enqueue(ar, 0);
	return ar;
}

/*
 * GET renewalInfo/cert_id, unsigned.  Not retried here: a failure only
 * means the lifetime rule for a while, and the caller asks again later.
 */
struct acme_req *
acme_renewal_info(struct acme_issuer *ai, const char *cert_id, acme_cb cb,
    void *arg)
{
	struct acme_req	*ar;
	char		*url;

	if (ai->ai_renewal_info == NULL)
		fatalx("%s: no renewalInfo", __func__);
	xasprintf(&url, "%s%s%s", ai->ai_renewal_info,
	    ai->ai_renewal_info[strlen(ai->ai_renewal_info) - 1] == '/' ?
	    "" : "/", cert_id);
	ar = acme_req_new(ai, AREQ_GET, url, NULL, NULL, cb, arg);
	free(url);
	ar->ar_ari = 1;
	ar->ar_no_retry = 1;
	acme_enqueue(ar, 0);
	return ar;
}

/*
 * The endpoint label of GET /metrics.  A request does not carry its
 * purpose, only what its caller handed over, so it is told from that:
 * the kind and flags set by the acme_* entry points, the directory's
 * revokeCert URL, and for the POSTs of orders the payload and Accept
 * that order.c gives each step (a challenge is answered with "{}", a
 * finalize sends the CSR, a download asks for the PEM chain).
 */
static const char *
acme_req_endpoint(const struct acme_req *ar)
{
	const char	*revoke = ar->ar_issuer->ai_revoke_cert;

	if (ar->ar_kind == AREQ_GET)
		return ar->ar_ari ? "renewalInfo" : "directory";
	if (ar->ar_issuer->ai_key_change != NULL &&
	    strcmp(ar->ar_url, ar->ar_issuer->ai_key_change) == 0)
		return "keyChange";
	if (ar->ar_issuer->ai_kid != NULL &&
	    strcmp(ar->ar_url, ar->ar_issuer->ai_kid) == 0)
		return "account";
	/* Before newAccount: a revocation may be signed with a JWK too. */
	if (revoke != NULL && strcmp(ar->ar_url, revoke) == 0)
		return "revokeCert";
	if (ar->ar_kind == AREQ_POST_JWK)
		return "newAccount";
	if (ar->ar_new_order)
		return "newOrder";
	if (ar->ar_authz) {
		if (ar->ar_payload != NULL && strcmp(ar->ar_payload, "{}") == 0)
			return "challenge";
		return "authz";
	}
	if (ar->ar_payload != NULL &&
	    strstr(ar->ar_payload, "\"csr\"") != NULL)
		return "finalize";
	if (ar->ar_accept != NULL &&
	    strcmp(ar->ar_accept, "application/pem-certificate-chain") == 0)
		return "certificate";
	return "order";
}

/* One exchange with the CA is over: count it, retries and nonces too. */
static void
acme_req_count(const struct acme_req *ar, const char *endpoint,
    const struct http_response *hr)
{
	metrics_acme_request(ar->ar_issuer->ai_name, endpoint, hr->hr_status,
	    util_monotonic() - ar->ar_sent_at);
}

/* A request left the network: give back its slot. */
static void
acme_req_landed(struct acme_req *ar)
{
	struct acme_issuer	*ai = ar->ar_issuer;

	ai->ai_inflight--;
	if (ar->ar_new_order)
		ai->ai_inflight_new_orders--;
	if (ar->ar_authz)
		ai->ai_inflight_authz--;
}

struct acme_req *
acme_post_authz(struct acme_issuer *ai, const char *url, const char *payload,
    acme_cb cb, void *arg)
{
	struct acme_req	*ar;

	ar = acme_req_new(ai, AREQ_POST_KID, url, payload, NULL, cb, arg);
	ar->ar_authz = 1;
	acme_enqueue(ar, 0);
	return ar;
}

void
acme_req_cancel(struct acme_req *ar)
{
	struct acme_issuer	*ai = ar->ar_issuer;

	switch (ar->ar_state) {
	case AREQ_QUEUED:
		TAILQ_REMOVE(acme_req_queue(ar), ar, ar_entry);
		break;
	case AREQ_NONCE:
	case AREQ_SENT:
		acme_req_landed(ar);
		break;
	case AREQ_WAITING:
		break;
	case AREQ_STATE_MAX:
		fatalx("%s: bad request state", __func__);
	}
	if (ar->ar_opened)
		ai->ai_open_orders--;
	if (ai->ai_excl == ar)
		ai->ai_excl = NULL;
	if (ai->ai_contact_req == ar)
		ai->ai_contact_req = NULL;
	acme_req_free(ar);
	acme_dispatch(ai);
}

/*
 * Token bucket for request_rate.  Returns 1 when a request may leave now,
 * otherwise arms the pace timer for when the next token is due.
 */
static int
acme_rate_allows(struct acme_issuer *ai)
{
	struct timeval	 wait;
	double		 rate = ai->ai_conf->ci_rate, burst, need, now;

	if (rate <= 0)
		return 1;
	burst = ai->ai_conf->ci_burst > 0 ? ai->ai_conf->ci_burst : 1;
	now = util_monotonic();
	ai->ai_tokens += rate * (now - ai->ai_refilled_at);
	ai->ai_refilled_at = now;
	if (ai->ai_tokens > burst)
		ai->ai_tokens = burst;
	if (ai->ai_tokens >= 1.0) {
		ai->ai_tokens -= 1.0;
		return 1;
	}
	if (!evtimer_pending(ai->ai_pace_ev, NULL)) {
		need = (1.0 - ai->ai_tokens) / rate;
		wait.tv_sec = (time_t)need;
		wait.tv_usec = (suseconds_t)((need - (double)wait.tv_sec) * 1e6) + 1;
		evtimer_add(ai->ai_pace_ev, &wait);
	}
	return 0;
}

/*
 * Whether ar must wait under new_order_exclusive: a request to an
 * authorization or a challenge while a newOrder is in flight, or a
 * (retried) newOrder while such a request is.  Pebble 2.4.0 takes its
 * store lock and then authorization locks when it scans for reusable
 * authorizations on newOrder, but an authorization lock and then the
 * store lock to answer for an authorization or a challenge: the two
 * together can deadlock it for good.  Real CAs need no such care, so it
 * is an issuer's setting, off unless asked for.
 */
static int
acme_kept_apart(const struct acme_issuer *ai, const struct acme_req *ar)
{
	if (ar->ar_authz && ai->ai_inflight_new_orders > 0)
		return 1;
	return ar->ar_new_order && ai->ai_inflight_authz > 0;
}

/*
 * The queue to serve next: bootstrap first; then the steps of orders under
 * way, so that they finish before more are opened; then new orders, while
 * fewer than ACME_MAX_OPEN_ORDERS are open.  Open orders are what a CA has
 * to track, and keeping them few keeps its per-request work small.
 *
 * With new_order_exclusive on, a newOrder is never in flight together
 * with a request to an authorization or a challenge (acme_kept_apart()).
 */
static struct acme_reqs *
acme_next_queue(struct acme_issuer *ai)
{
	struct acme_req	*head;
	int		 apart = ai->ai_conf->ci_new_order_exclusive;

	if (!TAILQ_EMPTY(&ai->ai_boot_queue))
		return &ai->ai_boot_queue;
	if (ai->ai_state != ISSUER_READY)
		return NULL;
	if (ai->ai_excl != NULL) {
		if (TAILQ_EMPTY(&ai->ai_excl_queue))
			return NULL;	/* on the wire: nothing else leaves */
		if (!ai->ai_excl->ar_after_orders || ai->ai_open_orders == 0)
			return ai->ai_inflight == 0 ? &ai->ai_excl_queue : NULL;
		/* The open orders go on, to their end; no new one opens. */
	}
	if ((head = TAILQ_FIRST(&ai->ai_queue)) != NULL) {
		if (apart && acme_kept_apart(ai, head))
			return NULL;
		return &ai->ai_queue;
	}
	if (ai->ai_excl == NULL && !TAILQ_EMPTY(&ai->ai_order_queue) &&
	    ai->ai_open_orders < ACME_MAX_OPEN_ORDERS &&
	    !(apart && ai->ai_inflight_authz > 0))
		return &ai->ai_order_queue;
	return NULL;
}

static void
acme_dispatch(struct acme_issuer *ai)
{
	struct acme_reqs	*q;
	struct acme_req		*ar;

	if (ai->ai_state == ISSUER_DEACTIVATED && !ai->ai_closing &&
	    (!TAILQ_EMPTY(&ai->ai_queue) || !TAILQ_EMPTY(&ai->ai_order_queue)))
		event_active(ai->ai_fail_ev, EV_TIMEOUT, 1);
	while (!ai->ai_closing && ai->ai_inflight < ACME_MAX_INFLIGHT) {
		if ((q = acme_next_queue(ai)) == NULL)
			return;
		if (!acme_rate_allows(ai))
			return;
		ar = TAILQ_FIRST(q);
		TAILQ_REMOVE(q, ar, ar_entry);
		if (ar->ar_new_order && !ar->ar_opened) {
			ar->ar_opened = 1;
			ai->ai_open_orders++;
		}
		ai->ai_inflight++;
		if (ar->ar_new_order)
			ai->ai_inflight_new_orders++;
		if (ar->ar_authz)
			ai->ai_inflight_authz++;
		acme_req_send(ar);
	}
}

/*
 * The order a newOrder created is over (done, failed or dropped): its slot
 * goes to the next new order.
 */
void
acme_order_close(struct acme_issuer *ai)
{
	if (ai->ai_open_orders == 0)
		fatalx("%s: no open order", __func__);
	ai->ai_open_orders--;
	acme_dispatch(ai);
}

/* Parse Retry-After: delta-seconds or an HTTP-date.  0 when absent. */
static time_t
acme_retry_after(const struct http_response *hr)
{
	const char	*v;
	char		*end;
	struct tm	 tm;
	long long	 secs;
	time_t		 now = util_now();

	if ((v = http_response_header(hr, "Retry-After")) == NULL)
		return 0;
	errno = 0;
	secs = strtoll(v, &end, 10);
	if (end != v && *end == '\0' && errno == 0 && secs >= 0) {
		if (secs > 1000000000)	/* keep the sum far from overflow */
			secs = 1000000000;
		return now + (time_t)secs;
	}
	memset(&tm, 0, sizeof(tm));
	end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (end == NULL || *end != '\0')
		return 0;
	return timegm(&tm) > now ? timegm(&tm) : now;
}

static int
acme_is_json(const struct http_response *hr)
{
	const char	*ct = http_response_header(hr, "Content-Type");

	if (ct == NULL)
		return 0;
	return strncmp(ct, "application/json", 16) == 0 ||
	    strncmp(ct, "application/problem+json", 24) == 0;
}

static void
acme_reply_fill(struct acme_reply *r, const struct http_response *hr)
{
	json_error_t	 jerr;

	memset(r, 0, sizeof(*r));
	r->http = hr;
	r->status = hr->hr_status;
	r->error = hr->hr_error;
	r->body = hr->hr_body;
	r->len = hr->hr_len;
	if (hr->hr_status == 0)
		return;
	r->location = http_response_header(hr, "Location");
	r->retry_after = acme_retry_after(hr);
	if (hr->hr_len > 0 && acme_is_json(hr))
		r->json = json_loadb(hr->hr_body, hr->hr_len, 0, &jerr);
	if (hr->hr_status >= 400 && json_is_object(r->json)) {
		r->problem_type = json_string_value(json_object_get(r->json,
		    "type"));
		r->problem_detail = json_string_value(json_object_get(r->json,
		    "detail"));
	}
}

int
acme_problem_is(const struct acme_reply *r, const char *name)
{
	size_t	 len = strlen(ACME_URN);

	return r->problem_type != NULL &&
	    strncmp(r->problem_type, ACME_URN, len) == 0 &&
	    strcmp(r->problem_type + len, name) == 0;
}

/*
 * Why a reply holds no JSON object, for the log ("" when it does), so that
 * "HTTP 200" from a CA that sent HTML or half a document says which.  The
 * CA's Content-Type is shown with anything unprintable replaced.
 */
static const char *
acme_reply_shape(const struct acme_reply *r, char *buf, size_t len)
{
	const char	*ct;
	size_t		 i;

	if (json_is_object(r->json) || r->http == NULL)
		return "";
	if (r->len == 0)
		return ", empty body";
	if ((ct = http_response_header(r->http, "Content-Type")) == NULL)
		return ", no Content-Type";
	if (acme_is_json(r->http))
		return r->json == NULL ? ", body is not valid JSON" :
		    ", body is not a JSON object";
	snprintf(buf, len, ", Content-Type %.48s", ct);
	for (i = 0; buf[i] != '\0'; i++)
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			buf[i] = '?';
	return buf;
}

char *
acme_reply_describe(const struct acme_reply *r)
{
	char		 shape[80];
	char		*s;
	const char	*type = r->problem_type;

	if (r->status == 0) {
		xasprintf(&s, "%s", r->error != NULL ? r->error :
		    "network error");
		return s;
	}
	if (type != NULL && strncmp(type, ACME_URN, strlen(ACME_URN)) == 0)
		type += strlen(ACME_URN);
	if (type != NULL && r->problem_detail != NULL)
		xasprintf(&s, "HTTP %d %s: %s", r->status, type,
		    r->problem_detail);
	else if (type != NULL)
		xasprintf(&s, "HTTP %d %s", r->status, type);
	else
		xasprintf(&s, "HTTP %d%s", r->status,
		    acme_reply_shape(r, shape, sizeof(shape)));
	return s;
}

static void
acme_req_timer_cb(int fd, short ev, void *arg)
{
	struct acme_req	*ar = arg;

	(void)fd;
	(void)ev;
	acme_enqueue(ar, 1);
}

/* Wait, then requeue; the request keeps its place at the queue's head. */
static void
acme_req_wait(struct acme_req *ar, double seconds)
{
	struct timeval	 tv;

	if (ar->ar_timer == NULL &&
	    (ar->ar_timer = evtimer_new(ar->ar_issuer->ai_base,
	    acme_req_timer_cb, ar)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	acme_req_set_state(ar, AREQ_WAITING);
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	evtimer_add(ar->ar_timer, &tv);
}

/* Hand the outcome to the caller; the request is gone afterwards. */
static void
acme_req_finish(struct acme_req *ar, const struct acme_reply *r)
{
	struct acme_issuer	*ai = ar->ar_issuer;
	acme_cb			 cb = ar->ar_cb;
	void			*arg = ar->ar_arg;

	/* A created order keeps its slot until acme_order_close(). */
	if (ar->ar_opened && r->status != 201)
		ai->ai_open_orders--;
	ar->ar_http = NULL;
	acme_req_free(ar);
	cb(r, arg);
}

/*
 * Decide whether a reply is retried here.  Returns 1 when the request was
 * requeued or is waiting, 0 when the caller should see the reply.
 */
static int
acme_req_retry(struct acme_req *ar, const struct acme_reply *r)
{
	struct acme_issuer	*ai = ar->ar_issuer;
	time_t			 wait;
	char			*why;

	if (ar->ar_no_retry)
		return 0;
	if (r->status == 400 && acme_problem_is(r, "badNonce") &&
	    ++ar->ar_badnonce_tries < ACME_BADNONCE_TRIES) {
		log_debug("issuer \"%s\": badNonce for %s, resending",
		    ai->ai_name, ar->ar_url);
		acme_enqueue(ar, 1);
		return 1;
	}
	if ((r->status == 429 || r->status == 503) &&
	    ++ar->ar_rate_tries < ACME_RATE_TRIES) {
		wait = r->retry_after > 0 ? r->retry_after - util_now() :
		    (time_t)util_jitter(1 << ar->ar_rate_tries, 0.25);
		if (wait > ACME_RETRY_AFTER_MAX)
			return 0;	/* the order backs off instead */
		if (wait < 1)
			wait = 1;
		why = acme_reply_describe(r);
		log_info("issuer \"%s\": %s; retrying in %llds", ai->ai_name,
		    why, (long long)wait);
		free(why);
		acme_req_wait(ar, (double)wait);
		return 1;
	}
	if (r->status >= 500 && r->status != 503 && ar->ar_5xx_to_caller)
		return 0;
	if ((r->status == 0 || (r->status >= 500 && r->status != 503)) &&
	    ++ar->ar_net_tries < ACME_NET_TRIES) {
		double	 delay = util_jitter((double)(1 << ar->ar_net_tries),
		    0.25);

		why = acme_reply_describe(r);
		log_warnx("issuer \"%s\": %s: %s; retrying in %.1fs",
		    ai->ai_name, ar->ar_url, why, delay);
		free(why);
		acme_req_wait(ar, delay);
		return 1;
	}
	return 0;
}

/*
 * The CA does not know the account ar was signed for: it forgot us, or
 * was reset.  Register again, once for every request signed before: those
 * answered while that runs, or after it, wait for it and go again with
 * the new account instead of failing their orders.
 */
static void
acme_account_forgotten(struct acme_issuer *ai, struct acme_req *ar)
{
	if (ai->ai_state == ISSUER_READY && ai->ai_kid != NULL &&
	    ar->ar_kid != NULL && strcmp(ar->ar_kid, ai->ai_kid) == 0) {
		log_warnx("issuer \"%s\": account %s is unknown to the CA; "
		    "registering again", ai->ai_name, ai->ai_kid);
		free(ai->ai_kid);
		ai->ai_kid = NULL;
		acme_set_state(ai, ISSUER_ACCOUNT);
		acme_enqueue(ar, 1);
		acme_boot(ai);
		return;
	}
	log_debug("issuer \"%s\": %s was signed for account %s, which the "
	    "CA forgot; sending it again", ai->ai_name, ar->ar_url,
	    ar->ar_kid != NULL ? ar->ar_kid : "(none)");
	acme_enqueue(ar, 1);
}

static void
acme_req_done(const struct http_response *hr, void *arg)
{
	struct acme_req		*ar = arg;
	struct acme_issuer	*ai = ar->ar_issuer;
	struct acme_reply	 r;
	const char		*nonce;

	ar->ar_http = NULL;
	acme_req_count(ar, acme_req_endpoint(ar), hr);
	acme_req_landed(ar);
	if ((nonce = http_response_header(hr, "Replay-Nonce")) != NULL)
		nonce_put(ai->ai_nonces, nonce);
	acme_reply_fill(&r, hr);

	if (r.status != 0 && acme_problem_is(&r, "accountDoesNotExist") &&
	    ar->ar_kind == AREQ_POST_KID && ar->ar_account_tries++ == 0)
		acme_account_forgotten(ai, ar);
	else if (!acme_req_retry(ar, &r))
		acme_req_finish(ar, &r);
	json_decref(r.json);
	acme_dispatch(ai);
}

static void
acme_nonce_done(const struct http_response *hr, void *arg)
{
	struct acme_req		*ar = arg;
	struct acme_issuer	*ai = ar->ar_issuer;
	const char		*nonce;
	struct acme_reply	 r;

	ar->ar_http = NULL;
	acme_req_count(ar, "newNonce", hr);
	nonce = http_response_header(hr, "Replay-Nonce");
	if (nonce != NULL && nonce_put(ai->ai_nonces, nonce) == 0) {
		acme_req_send(ar);	/* keeps its slot */
		return;
	}
	acme_req_landed(ar);
	acme_reply_fill(&r, hr);
	if (r.status != 0) {
		/* No usable nonce: a CA fault, retried like a network error. */
		r.error = nonce == NULL ? "newNonce gave no Replay-Nonce" :
		    "newNonce gave a malformed Replay-Nonce";
		r.status = 0;
	}
	if (!acme_req_retry(ar, &r))
		acme_req_finish(ar, &r);
	json_decref(r.json);
	acme_dispatch(ai);
}

static void
acme_req_send(struct acme_req *ar)
{
	struct acme_issuer	*ai = ar->ar_issuer;
	char			*nonce = NULL, *body = NULL;
	const char		*kid = NULL;

	if (ar->ar_kind == AREQ_GET) {
		acme_req_set_state(ar, AREQ_SENT);
		ar->ar_sent_at = util_monotonic();
		ar->ar_http = http_pool_request(ai->ai_http, "GET", ar->ar_url,
		    NULL, "application/json", NULL, 0, acme_req_done, ar);
		return;
	}
	if ((nonce = nonce_take(ai->ai_nonces)) == NULL) {
		acme_req_set_state(ar, AREQ_NONCE);
		ar->ar_sent_at = util_monotonic();
		ar->ar_http = http_pool_request(ai->ai_http, "HEAD",
		    ai->ai_new_nonce, NULL, NULL, NULL, 0, acme_nonce_done, ar);
		return;
	}
	if (ar->ar_kind == AREQ_POST_KID) {
		kid = ai->ai_kid;
		free(ar->ar_kid);
		ar->ar_kid = kid != NULL ? xstrdup(kid) : NULL;
	}
	if (ar->ar_new_order) {
		free(ar->ar_url);
		ar->ar_url = xstrdup(ai->ai_new_order);
	}
	body = jws_sign(ar->ar_key != NULL ? ar->ar_key : ai->ai_key, kid,
	    nonce, ar->ar_url, ar->ar_payload);
	free(nonce);
	if (body == NULL)
		fatalx("issuer \"%s\": signing a request failed", ai->ai_name);
	acme_req_set_state(ar, AREQ_SENT);
	ar->ar_sent_at = util_monotonic();
	ar->ar_http = http_pool_request(ai->ai_http, "POST", ar->ar_url,
	    "application/jose+json", ar->ar_accept, body, strlen(body),
	    acme_req_done, ar);
	free(body);
}

/* Bootstrap: directory, account key, account. */

static void
acme_boot_failed(struct acme_issuer *ai, const char *what, const char *why)
{
	struct timeval	 tv;
	double		 delay;

	ai->ai_boot_failures++;
	delay = ai->ai_boot_failures > 9 ? ACME_BOOT_BACKOFF_MAX :
	    (double)(1 << ai->ai_boot_failures);
	if (delay > ACME_BOOT_BACKOFF_MAX)
		delay = ACME_BOOT_BACKOFF_MAX;
	delay = util_jitter(delay, 0.2);
	if (delay < 1)
		delay = 1;
	log_warnx("issuer \"%s\": %s: %s; retrying in %.0fs", ai->ai_name,
	    what, why, delay);
	acme_set_state(ai, ISSUER_BACKOFF);
	tv.tv_sec = (time_t)delay;
	tv.tv_usec = (suseconds_t)((delay - (double)tv.tv_sec) * 1e6);
	evtimer_add(ai->ai_boot_ev, &tv);
}

static void
acme_boot_failed_reply(struct acme_issuer *ai, const char *what,
    const struct acme_reply *r)
{
	char	*why = acme_reply_describe(r);

	acme_boot_failed(ai, what, why);
	free(why);
}

static void
acme_set_ready(struct acme_issuer *ai)
{
	ai->ai_boot_failures = 0;
	acme_set_state(ai, ISSUER_READY);
	log_info("issuer \"%s\": account %s ready", ai->ai_name, ai->ai_kid);
	acme_dispatch(ai);
	acme_contact_check(ai);
}

/*
 * With a cluster, the whole fleet uses one account per issuer, kept in
 * Redis (cluster_account.c): an order that one node began, another can
 * resume, and the CA sees one client.  The first node to find none makes
 * it under the lease "account/ISSUER" (no certificate id has a '/'): it
 * takes its own account from state_path, or registers one, then stores
 * it with SET NX.  Every other node loads the fleet's account, and keeps
 * a copy in its state_path; an account of its own is set aside, not
 * lost.  An account_key file is the same on every node, so it needs none
 * of this: newAccount with the same key finds the same account.
 */
static int
acme_fleet_shares_account(const struct acme_issuer *ai)
{
	return cluster_enabled() && ai->ai_conf->ci_account_key_file == NULL;
}

static void
acme_fleet_retry(struct acme_issuer *ai, int seconds)
{
	struct timeval	 tv = { seconds, 0 };

	evtimer_add(ai->ai_boot_ev, &tv);
}

static void
acme_fleet_use(struct acme_issuer *ai, struct cluster_rec *rec)
{
	ai->ai_key = rec->cr_key;
	rec->cr_key = NULL;
	ai->ai_thumbprint = keys_thumbprint(ai->ai_key);
	free(ai->ai_kid);
	ai->ai_kid = xstrdup(rec->cr_url);
	log_info("issuer \"%s\": using the fleet's account %s", ai->ai_name,
	    ai->ai_kid);
	acme_set_ready(ai);
}

/* The local copy of the fleet's account, so state_path holds it too. */
static int
acme_fleet_cache(struct acme_issuer *ai, struct cluster_rec *rec,
    char **cause)
{
	const char	*dir = ai->ai_conf->ci_state_path;
	EVP_PKEY	*own = NULL;
	char		*url = NULL, *ignored = NULL, suffix[32];
	int		 same;

	if (store_init(dir, cause) == -1)
		return -1;
	if (store_load_account(dir, &own, &url, &ignored) == -1)
		free(ignored);	/* none, or unreadable: nothing to keep */
	same = own != NULL && EVP_PKEY_eq(own, rec->cr_key) == 1;
	EVP_PKEY_free(own);
	free(url);
	if (own != NULL && !same) {
		snprintf(suffix, sizeof(suffix), "own-%lld",
		    (long long)time(NULL));
		log_warnx("issuer \"%s\": this node's own account is set "
		    "aside as %s/account.key.%s; the fleet's is used", ai->ai_name,
		    dir, suffix);
		if (store_set_aside_account(dir, suffix, cause) == -1)
			return -1;
	}
	if (!same && store_save_account_key(dir, rec->cr_key, cause) == -1)
		return -1;
	return store_save_account_url(dir, rec->cr_url, cause);
}

static void
acme_fleet_adopt(struct acme_issuer *ai, struct cluster_rec *rec)
{
	char	*cause = NULL;

	if (strcmp(rec->cr_issuer, ai->ai_conf->ci_uri) != 0) {
		xasprintf(&cause, "Redis holds an account of %s for this "
		    "issuer, not of %s: every node must give issuer \"%s\" the "
		    "same uri", rec->cr_issuer, ai->ai_conf->ci_uri,
		    ai->ai_name);
		acme_boot_failed(ai, "the fleet's account", cause);
		free(cause);
		return;
	}
	if (acme_fleet_cache(ai, rec, &cause) == -1) {
		acme_boot_failed(ai, "keeping the fleet's account", cause);
		free(cause);
		return;
	}
	acme_fleet_use(ai, rec);
}

static void
acme_fleet_leased(enum cluster_lease_event ev, void *arg)
{
	struct acme_issuer	*ai = arg;

	switch (ev) {
	case LEASE_GRANTED:
		log_info("issuer \"%s\": the fleet has no account yet; this "
		    "node provides it", ai->ai_name);
		acme_account_local(ai);
		break;
	case LEASE_LOST:
		break;	/* SET NX still keeps the first account stored */
	case LEASE_BUSY:	/* another node is making it */
	case LEASE_UNAVAILABLE:
		cluster_lease_release(ai->ai_fleet_lease);
		ai->ai_fleet_lease = NULL;
		acme_fleet_retry(ai, 1);
		break;
	}
}

static void
acme_fleet_got(int rc, struct cluster_rec *rec, void *arg)
{
	struct acme_issuer	*ai = arg;
	char			*id;

	ai->ai_fleet_op = NULL;
	if (rc == -1) {
		acme_boot_failed(ai, "the fleet's account", "Redis did not "
		    "answer, or holds a value this node cannot use (logged)");
		return;
	}
	if (rc == 1) {
		acme_fleet_adopt(ai, rec);
		return;
	}
	xasprintf(&id, "account/%s", ai->ai_name);
	ai->ai_fleet_lease = cluster_lease_take(id, acme_fleet_leased, ai);
	free(id);
	if (ai->ai_fleet_lease == NULL)
		acme_fleet_retry(ai, 1);
}

static void
acme_fleet_account(struct acme_issuer *ai)
{
	if (cluster_up())
		ai->ai_fleet_op = cluster_account_get(ai->ai_name,
		    acme_fleet_got, ai);
	if (ai->ai_fleet_op == NULL) {
		log_debug("issuer \"%s\": waiting for Redis for the fleet's "
		    "account", ai->ai_name);
		acme_fleet_retry(ai, 1);
	}
}

/* Forget the account's key, URL and thumbprint, to load or register anew. */
static void
acme_account_unload(struct acme_issuer *ai)
{
	EVP_PKEY_free(ai->ai_key);
	ai->ai_key = NULL;
	free(ai->ai_kid);
	ai->ai_kid = NULL;
	free(ai->ai_thumbprint);
	ai->ai_thumbprint = NULL;
}

static void
acme_fleet_stored(int rc, void *arg)
{
	struct acme_issuer	*ai = arg;

	ai->ai_fleet_op = NULL;
	cluster_lease_release(ai->ai_fleet_lease);
	ai->ai_fleet_lease = NULL;
	if (rc == 1) {
		log_info("issuer \"%s\": account %s is the fleet's now",
		    ai->ai_name, ai->ai_kid);
		acme_set_ready(ai);
		return;
	}
	/* Another node's came first (rc 0), or Redis failed: ask again. */
	acme_account_unload(ai);
	if (rc == 0)
		acme_fleet_account(ai);
	else
		acme_boot_failed(ai, "storing the fleet's account",
		    "Redis did not take it");
}

static void
acme_fleet_kept(int rc, void *arg)
{
	struct acme_issuer	*ai = arg;

	ai->ai_fleet_op = NULL;
	if (rc == 1)
		log_info("issuer \"%s\": Redis had lost the fleet's account; "
		    "stored there again", ai->ai_name);
}

/*
 * The link is back: a Redis that lost the fleet's account (a failover, a
 * restart from an old AOF) gets it again, so that a node that starts now
 * does not register another.  SET NX: one that is there stays.
 */
void
acme_fleet_up(struct acme_issuer *ai)
{
	if (ai->ai_state != ISSUER_READY || !acme_fleet_shares_account(ai) ||
	    ai->ai_fleet_op != NULL || ai->ai_key == NULL)
		return;
	ai->ai_fleet_op = cluster_account_put(ai->ai_name, ai->ai_conf->ci_uri,
	    ai->ai_kid, ai->ai_key, acme_fleet_kept, ai);
}

/* The account is known; with a fleet being given one, store it first. */
static void
acme_account_ready(struct acme_issuer *ai)
{
	if (ai->ai_fleet_lease == NULL) {
		acme_set_ready(ai);
		return;
	}
	ai->ai_fleet_op = cluster_account_put(ai->ai_name, ai->ai_conf->ci_uri,
	    ai->ai_kid, ai->ai_key, acme_fleet_stored, ai);
	if (ai->ai_fleet_op == NULL)
		acme_fleet_stored(-1, ai);
}

static void
acme_account_done(const struct acme_reply *r, void *arg)
{
	struct acme_issuer	*ai = arg;
	char			*cause = NULL;

	ai->ai_boot_req = NULL;
	if ((r->status != 200 && r->status != 201) || r->location == NULL) {
		acme_boot_failed_reply(ai, "newAccount", r);
		return;
	}
	if (store_save_account_url(ai->ai_conf->ci_state_path, r->location,
	    &cause) == -1) {
		acme_boot_failed(ai, "saving the account URL", cause);
		free(cause);
		return;
	}
	ai->ai_kid = xstrdup(r->location);
	log_info("issuer \"%s\": registered account %s", ai->ai_name,
	    ai->ai_kid);
	/* The answer is the account object: no need to read it again. */
	acme_contact_keep(ai, r);
	acme_account_ready(ai);
}

static char *
acme_account_payload(struct acme_issuer *ai)
{
	const struct conf_issuer *ci = ai->ai_conf;
	json_t		*o, *contact, *eab;
	char		*s;
	size_t		 i;

	o = json_object();
	if (ci->ci_accept_tos)
		json_object_set_new(o, "termsOfServiceAgreed", json_true());
	if (ci->ci_ncontact > 0) {
		contact = json_array();
		for (i = 0; i < ci->ci_ncontact; i++)
			json_array_append_new(contact,
			    json_string(ci->ci_contact[i]));
		json_object_set_new(o, "contact", contact);
	}
	if (ci->ci_eab_kid != NULL) {
		eab = jws_eab(ci->ci_eab_kid, ci->ci_eab_hmac,
		    ci->ci_eab_hmac_len, ai->ai_key, ai->ai_new_account);
		if (eab == NULL)
			fatalx("issuer \"%s\": external account binding "
			    "failed", ai->ai_name);
		json_object_set_new(o, "externalAccountBinding", eab);
	}
	if ((s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("%s: json_dumps", __func__);
	json_decref(o);
	return s;
}

static void
acme_register(struct acme_issuer *ai)
{
	struct acme_req	*ar;
	char		*payload;

	if (ai->ai_eab_required && ai->ai_conf->ci_eab_kid == NULL) {
		acme_boot_failed(ai, "newAccount", "the CA requires "
		    "external_account_key, and none is configured");
		return;
	}
	if (ai->ai_tos != NULL && !ai->ai_conf->ci_accept_tos)
		log_warnx("issuer \"%s\": the CA has terms of service (%s); "
		    "add accept_terms_of_service if you accept them",
		    ai->ai_name, ai->ai_tos);
	payload = acme_account_payload(ai);
	ar = acme_req_new(ai, AREQ_POST_JWK, ai->ai_new_account, payload,
	    NULL, acme_account_done, ai);
	free(payload);
	ar->ar_bootstrap = 1;
	ai->ai_boot_req = ar;
	acme_enqueue(ar, 0);
}

static EVP_PKEY *
acme_account_key(struct acme_issuer *ai, char **url, char **cause)
{
	const struct conf_issuer *ci = ai->ai_conf;
	const char	*dir = ci->ci_state_path;
	EVP_PKEY	*key = NULL, *stored = NULL;
	char		*ignored = NULL;
	int		 rc;

	*url = NULL;
	if (store_init(dir, cause) == -1)
		return NULL;
	if (ci->ci_account_key_file != NULL) {
		/* The key is the user's file; the state keeps its URL. */
		if ((key = keys_load_file(ci->ci_account_key_file, cause)) == NULL)
			return NULL;
		if (store_load_account(dir, &stored, url, &ignored) == -1)
			free(ignored);
		EVP_PKEY_free(stored);
		return key;
	}
	if ((rc = store_load_account(dir, &key, url, cause)) == -1)
		return NULL;
	if (rc == 0)
		return key;
	log_info("issuer \"%s\": generating a %s account key", ai->ai_name,
	    key_type_name(ci->ci_account_key_type));
	if ((key = keys_generate(ci->ci_account_key_type)) == NULL) {
		*cause = xstrdup("key generation failed");
		return NULL;
	}
	if (store_save_account_key(dir, key, cause) == -1) {
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

/* This node's own account: from state_path, or registered now. */
static void
acme_account_local(struct acme_issuer *ai)
{
	char	*cause = NULL, *url = NULL;

	if (ai->ai_key == NULL) {
		/* cause names the file: account.key, account.url or the user's. */
		if ((ai->ai_key = acme_account_key(ai, &url, &cause)) == NULL) {
			acme_boot_failed(ai, "loading the account", cause);
			free(cause);
			return;
		}
		ai->ai_thumbprint = keys_thumbprint(ai->ai_key);
		if (url != NULL && ai->ai_kid == NULL) {
			ai->ai_kid = url;
			url = NULL;
		}
		free(url);
	}
	if (ai->ai_kid != NULL && acme_rollover_recover(ai))
		return;
	if (ai->ai_kid != NULL)
		acme_account_ready(ai);
	else
		acme_register(ai);
}

/*
 * account.deactivated: the account was deactivated (7.3.6), and a new
 * one is registered only when the user removes that file.  1 when the
 * issuer stops here.
 */
static int
acme_account_deactivated(struct acme_issuer *ai)
{
	const char	*dir = ai->ai_conf->ci_state_path;
	char		*url = NULL, *cause = NULL;
	int		 rc;

	if ((rc = store_load_deactivated(dir, &url, &cause)) == 1)
		return 0;
	if (rc == -1) {
		acme_boot_failed(ai, "loading the account", cause);
		free(cause);
		return 1;
	}
	free(ai->ai_deactivated);
	ai->ai_deactivated = url;
	acme_set_state(ai, ISSUER_DEACTIVATED);
	log_warnx("issuer \"%s\": account %s is deactivated (%s/"
	    "account.deactivated): no certificate is ordered; remove that "
	    "file and reload to register a new account", ai->ai_name, url, dir);
	acme_dispatch(ai);
	return 1;
}

static void
acme_account(struct acme_issuer *ai)
{
	acme_set_state(ai, ISSUER_ACCOUNT);
	if (acme_account_deactivated(ai))
		return;
	if (ai->ai_key == NULL && acme_fleet_shares_account(ai))
		acme_fleet_account(ai);
	else
		acme_account_local(ai);
}

static int
acme_directory_url(json_t *dir, const char *name, char **dst)
{
	const char	*v = json_string_value(json_object_get(dir, name));

	if (v == NULL || strncmp(v, "http", 4) != 0)
		return -1;
	free(*dst);
	*dst = xstrdup(v);
	return 0;
}

static void
acme_directory_done(const struct acme_reply *r, void *arg)
{
	struct acme_issuer	*ai = arg;
	json_t			*meta;
	const char		*tos;

	ai->ai_boot_req = NULL;
	if (r->status != 200) {
		acme_boot_failed_reply(ai, ai->ai_conf->ci_uri, r);
		return;
	}
	if (!json_is_object(r->json) ||
	    acme_directory_url(r->json, "newNonce", &ai->ai_new_nonce) == -1 ||
	    acme_directory_url(r->json, "newAccount", &ai->ai_new_account) == -1 ||
	    acme_directory_url(r->json, "newOrder", &ai->ai_new_order) == -1) {
		acme_boot_failed(ai, ai->ai_conf->ci_uri, "not an ACME "
		    "directory (newNonce, newAccount or newOrder missing)");
		return;
	}
	/* Optional: without it, renewals follow the lifetime rule alone. */
	if (acme_directory_url(r->json, "renewalInfo",
	    &ai->ai_renewal_info) == -1) {
		free(ai->ai_renewal_info);
		ai->ai_renewal_info = NULL;
	}
	/* Optional for us: only a revocation asked through the API needs it. */
	if (acme_directory_url(r->json, "keyChange", &ai->ai_key_change) == -1) {
		free(ai->ai_key_change);
		ai->ai_key_change = NULL;
	}
	if (acme_directory_url(r->json, "revokeCert", &ai->ai_revoke_cert) == -1)
		log_debug("issuer \"%s\": the directory offers no revokeCert",
		    ai->ai_name);
	meta = json_object_get(r->json, "meta");
	if ((tos = json_string_value(json_object_get(meta,
	    "termsOfService"))) != NULL) {
		free(ai->ai_tos);
		ai->ai_tos = xstrdup(tos);
	}
	ai->ai_eab_required = json_is_true(json_object_get(meta,
	    "externalAccountRequired"));
	json_decref(ai->ai_profiles);
	ai->ai_profiles = json_object_get(meta, "profiles");
	ai->ai_profiles = json_is_object(ai->ai_profiles) ?
	    json_incref(ai->ai_profiles) : NULL;
	log_debug("issuer \"%s\": directory loaded", ai->ai_name);
	acme_account(ai);
}

static void
acme_boot(struct acme_issuer *ai)
{
	struct acme_req	*ar;

	if (ai->ai_new_order != NULL) {
		/* The directory is known; only the account is missing. */
		acme_account(ai);
		return;
	}
	acme_set_state(ai, ISSUER_DIRECTORY);
	ar = acme_req_new(ai, AREQ_GET, ai->ai_conf->ci_uri, NULL, NULL,
	    acme_directory_done, ai);
	ar->ar_bootstrap = 1;
	ar->ar_no_retry = 1;	/* acme_boot_failed logs and backs off */
	ai->ai_boot_req = ar;
	acme_enqueue(ar, 0);
}

/* The account at the CA: rollover, deactivation, contact (RFC 8555 7.3). */

/*
 * A rollover cut short leaves account.key.next beside account.key (see
 * store.c).  Ask the CA whether it knows the new key: newAccount with
 * onlyReturnExisting, signed by it, finds the account only if keyChange
 * went through.  1 when the question is on its way.
 */
static void	 acme_rollover_probed(const struct acme_reply *, void *);
static struct acme_req *acme_rollover_probe(struct acme_issuer *, acme_cb);

static int
acme_rollover_recover(struct acme_issuer *ai)
{
	const char	*dir = ai->ai_conf->ci_state_path;
	struct acme_req	*ar;
	char		*cause = NULL;
	int		 rc;

	if (ai->ai_conf->ci_account_key_file != NULL)
		return 0;	/* the user's file: never rolled over here */
	if (ai->ai_next_key == NULL) {
		rc = store_load_account_next(dir, &ai->ai_next_key, &cause);
		if (rc == 1)
			return 0;
		if (rc == -1) {
			acme_boot_failed(ai, "loading account.key.next", cause);
			free(cause);
			return 1;
		}
	}
	log_info("issuer \"%s\": %s/account.key.next is left from a rollover "
	    "cut short; asking the CA which key it knows", ai->ai_name, dir);
	ar = acme_rollover_probe(ai, acme_rollover_probed);
	ar->ar_bootstrap = 1;
	ai->ai_boot_req = ar;
	acme_enqueue(ar, 0);
	return 1;
}

/* The CA has the new key: it is the account's key from now on. */
static void
acme_account_take_next(struct acme_issuer *ai)
{
	EVP_PKEY_free(ai->ai_key);
	ai->ai_key = ai->ai_next_key;
	ai->ai_next_key = NULL;
	free(ai->ai_thumbprint);
	ai->ai_thumbprint = keys_thumbprint(ai->ai_key);
}

/*
 * What an onlyReturnExisting answer says of account.key.next: 1 the CA
 * knows it as our account's key, 0 it does not (accountDoesNotExist, or
 * it is another account's), -1 no telling (the CA failed to answer).
 */
static int
acme_rollover_known(const struct acme_issuer *ai, const struct acme_reply *r)
{
	if (r->status == 200 && r->location != NULL)
		return strcmp(r->location, ai->ai_kid) == 0;
	if (r->status == 400 && acme_problem_is(r, "accountDoesNotExist"))
		return 0;
	return -1;
}

/* Ask whether the CA knows account.key.next (newAccount, by its jwk). */
static struct acme_req *
acme_rollover_probe(struct acme_issuer *ai, acme_cb cb)
{
	struct acme_req	*ar;

	ar = acme_req_new(ai, AREQ_POST_JWK, ai->ai_new_account,
	    "{\"onlyReturnExisting\":true}", NULL, cb, ai);
	ar->ar_key = ai->ai_next_key;
	EVP_PKEY_up_ref(ar->ar_key);
	return ar;
}

/*
 * The CA has account.key.next: it becomes account.key, and the key in
 * memory.  Logged before the swap, so that a crash there can be told
 * apart; if the rename fails, the next start asks the CA again.
 */
static void
acme_rollover_promote(struct acme_issuer *ai)
{
	const char	*dir = ai->ai_conf->ci_state_path;
	char		*cause = NULL;

	log_info("issuer \"%s\": the CA took the new account key; replacing "
	    "%s/account.key", ai->ai_name, dir);
	if (store_promote_account_next(dir, &cause) == -1) {
		log_warnx("issuer \"%s\": %s; the new key stays in "
		    "account.key.next", ai->ai_name, cause);
		free(cause);
	}
	acme_account_take_next(ai);
}

/* The CA does not have account.key.next: it goes. */
static void
acme_rollover_drop(struct acme_issuer *ai)
{
	char	*cause = NULL;

	if (store_drop_account_next(ai->ai_conf->ci_state_path,
	    &cause) == -1) {
		log_warnx("issuer \"%s\": %s", ai->ai_name, cause);
		free(cause);
	}
	EVP_PKEY_free(ai->ai_next_key);
	ai->ai_next_key = NULL;
}

static void
acme_rollover_probed(const struct acme_reply *r, void *arg)
{
	struct acme_issuer	*ai = arg;

	ai->ai_boot_req = NULL;
	switch (acme_rollover_known(ai, r)) {
	case 1:
		log_info("issuer \"%s\": the CA knows the key of "
		    "account.key.next; it is account.key now", ai->ai_name);
		acme_rollover_promote(ai);
		break;
	case 0:
		log_info("issuer \"%s\": the CA does not know the key of "
		    "account.key.next; account.key stays, the other is removed",
		    ai->ai_name);
		acme_rollover_drop(ai);
		break;
	default:
		acme_boot_failed_reply(ai, "asking the CA about "
		    "account.key.next", r);
		return;
	}
	acme_account_ready(ai);
}

/* Hand an operation's outcome to whoever asked, if they still wait. */
static void
acme_account_op_done(struct acme_issuer *ai, int rc, const char *why)
{
	acme_account_cb	 cb = ai->ai_acct_cb;
	void		*arg = ai->ai_acct_arg;

	ai->ai_acct_op = NULL;
	ai->ai_acct_cb = NULL;
	ai->ai_acct_arg = NULL;
	if (cb != NULL)
		cb(rc, why, arg);
}

/*
 * Whether op may start now; -1 with a cause when not.  With a cluster
 * the account is the fleet's (acme_fleet_shares_account()): every node
 * signs with the key it loaded from Redis, which is written once (SET
 * NX) and never replaced, so a new key or a deactivation done by one
 * node would leave the others signing for an account that no longer
 * takes their key.  Both are refused there rather than half done.
 */
static int
acme_account_may(struct acme_issuer *ai, const char *op, char **cause)
{
	if (ai->ai_state == ISSUER_DEACTIVATED) {
		xasprintf(cause, "issuer \"%s\": its account %s is "
		    "deactivated", ai->ai_name, ai->ai_deactivated);
		return -1;
	}
	if (ai->ai_state != ISSUER_READY) {
		xasprintf(cause, "issuer \"%s\": its account is not ready "
		    "(state %s)", ai->ai_name, issuer_state_names[ai->ai_state]);
		return -1;
	}
	if (ai->ai_acct_op != NULL) {
		xasprintf(cause, "issuer \"%s\": a %s of its account is "
		    "already under way", ai->ai_name, ai->ai_acct_op);
		return -1;
	}
	if (acme_fleet_shares_account(ai)) {
		xasprintf(cause, "issuer \"%s\": cluster mode: the account is "
		    "shared by every node through Redis, and a %s by one node "
		    "would leave the others with a key the CA no longer takes; "
		    "not supported with cluster (see README, Accounts)",
		    ai->ai_name, op);
		return -1;
	}
	return 0;
}

/*
 * Send an account operation, alone (acme_next_queue()).  after_orders:
 * only once every open order has closed.  The CA checks an HTTP-01 key
 * authorization against the account key's thumbprint when it validates,
 * so a key changed while a validation runs would fail that validation
 * (and count against the CA's failed-validation limit).
 */
static void
acme_account_send(struct acme_issuer *ai, const char *op, const char *url,
    const char *payload, int after_orders, acme_cb done, acme_account_cb cb,
    void *arg)
{
	struct acme_req	*ar;

	ai->ai_acct_op = op;
	ai->ai_acct_cb = cb;
	ai->ai_acct_arg = arg;
	ar = acme_req_new(ai, AREQ_POST_KID, url, payload, NULL, done, ai);
	ar->ar_exclusive = 1;
	ar->ar_after_orders = after_orders;
	ar->ar_account_tries = 1;	/* never re-register under it */
	ai->ai_excl = ar;
	acme_enqueue(ar, 0);
}

static void
acme_key_change_done(struct acme_issuer *ai)
{
	log_info("issuer \"%s\": account %s rolled over to a new key, "
	    "thumbprint %s", ai->ai_name, ai->ai_kid, ai->ai_thumbprint);
	acme_account_op_done(ai, 0, NULL);
}

/*
 * keyChange failed, and the CA was asked whether it took the new key
 * anyway: a keyChange it carried out but whose answer was lost, then
 * retried with the old key and refused, must not lose the account.
 */
static void
acme_key_change_checked(const struct acme_reply *r, void *arg)
{
	struct acme_issuer	*ai = arg;
	char			*why = ai->ai_acct_why;

	ai->ai_excl = NULL;
	ai->ai_acct_why = NULL;
	switch (acme_rollover_known(ai, r)) {
	case 1:
		acme_rollover_promote(ai);
		acme_key_change_done(ai);
		break;
	case 0:
		acme_rollover_drop(ai);
		log_warnx("issuer \"%s\": keyChange: %s; the account keeps its "
		    "key", ai->ai_name, why);
		acme_account_op_done(ai, -1, why);
		break;
	default:
		EVP_PKEY_free(ai->ai_next_key);
		ai->ai_next_key = NULL;
		free(why);
		xasprintf(&why, "keyChange failed, and whether the CA took the "
		    "new key is unknown: %s/account.key.next is kept, and the "
		    "next start asks the CA again", ai->ai_conf->ci_state_path);
		log_warnx("issuer \"%s\": %s", ai->ai_name, why);
		acme_account_op_done(ai, -1, why);
		break;
	}
	free(why);
}

static void
acme_key_changed(const struct acme_reply *r, void *arg)
{
	struct acme_issuer	*ai = arg;
	struct acme_req		*ar;

	ai->ai_excl = NULL;
	if (r->status == 200) {
		acme_rollover_promote(ai);
		acme_key_change_done(ai);
		return;
	}
	free(ai->ai_acct_why);
	ai->ai_acct_why = acme_reply_describe(r);
	log_warnx("issuer \"%s\": keyChange: %s; asking the CA which key it "
	    "has", ai->ai_name, ai->ai_acct_why);
	ar = acme_rollover_probe(ai, acme_key_change_checked);
	ar->ar_exclusive = 1;
	ai->ai_excl = ar;
	acme_enqueue(ar, 1);
}

/*
 * Key rollover (RFC 8555 7.3.5): a new key of type (or of account_key's
 * type, when type is -1), written to account.key.next before keyChange
 * leaves; the outer JWS is signed by the old key, the inner one by the
 * new key over {account, oldKey}.  In memory the key changes only once
 * the CA said yes, and requests sign when they leave, so orders under
 * way carry on with whichever key the CA has.
 */
int
acme_account_key_change(struct acme_issuer *ai, int type, acme_account_cb cb,
    void *arg, char **cause)
{
	const char	*dir = ai->ai_conf->ci_state_path;
	json_t		*o;
	char		*payload = NULL, *inner = NULL, *why = NULL;

	if (acme_account_may(ai, "key rollover", cause) == -1)
		return -1;
	if (ai->ai_conf->ci_account_key_file != NULL) {
		xasprintf(cause, "issuer \"%s\": its account key is your file "
		    "%s (account_key), which the daemon does not replace; roll "
		    "it over with another client, then put the new key there",
		    ai->ai_name, ai->ai_conf->ci_account_key_file);
		return -1;
	}
	if (ai->ai_key_change == NULL) {
		xasprintf(cause, "issuer \"%s\": the CA's directory has no "
		    "keyChange", ai->ai_name);
		return -1;
	}
	if (type < 0 || type >= KEY_TYPE_MAX)
		type = ai->ai_conf->ci_account_key_type;
	if ((ai->ai_next_key = keys_generate(type)) == NULL) {
		xasprintf(cause, "issuer \"%s\": generating a %s key failed",
		    ai->ai_name, key_type_name(type));
		return -1;
	}
	if (store_save_account_next(dir, ai->ai_next_key, cause) == -1)
		goto fail;
	o = json_pack("{s:s, s:o}", "account", ai->ai_kid, "oldKey",
	    keys_jwk(ai->ai_key));
	if (o == NULL || (payload = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	json_decref(o);
	inner = jws_sign_inner(ai->ai_next_key, ai->ai_key_change, payload);
	free(payload);
	if (inner == NULL) {
		xasprintf(cause, "issuer \"%s\": signing keyChange failed",
		    ai->ai_name);
		goto drop;
	}
	log_info("issuer \"%s\": rolling account %s over to a new %s key",
	    ai->ai_name, ai->ai_kid, key_type_name(type));
	acme_account_send(ai, "key rollover", ai->ai_key_change, inner, 1,
	    acme_key_changed, cb, arg);
	free(inner);
	return 0;
drop:
	if (store_drop_account_next(dir, &why) == -1) {
		log_warnx("issuer \"%s\": %s", ai->ai_name, why);
		free(why);
	}
fail:
	EVP_PKEY_free(ai->ai_next_key);
	ai->ai_next_key = NULL;
	return -1;
}

static void
acme_account_gone(const struct acme_reply *r, void *arg)
{
	struct acme_issuer	*ai = arg;
	const char		*dir = ai->ai_conf->ci_state_path;
	char			*cause = NULL, *why;

	ai->ai_excl = NULL;
	if (r->status != 200) {
		why = acme_reply_describe(r);
		log_warnx("issuer \"%s\": deactivation refused: %s",
		    ai->ai_name, why);
		acme_account_op_done(ai, -1, why);
		free(why);
		return;
	}
	free(ai->ai_deactivated);
	ai->ai_deactivated = ai->ai_kid;
	ai->ai_kid = NULL;
	free(ai->ai_ca_status);
	ai->ai_ca_status = xstrdup("deactivated");
	acme_set_state(ai, ISSUER_DEACTIVATED);
	log_warnx("issuer \"%s\": account %s is deactivated at the CA; no "
	    "certificate is ordered any more", ai->ai_name, ai->ai_deactivated);
	if (store_mark_deactivated(dir, ai->ai_deactivated, &cause) == -1) {
		log_warnx("issuer \"%s\": %s", ai->ai_name, cause);
		free(cause);
	}
	acme_account_op_done(ai, 0, NULL);
	acme_dispatch(ai);
}

/* Deactivation (RFC 8555 7.3.6): for good, the CA never takes it back. */
int
acme_account_deactivate(struct acme_issuer *ai, acme_account_cb cb, void *arg,
    char **cause)
{
	if (acme_account_may(ai, "deactivation", cause) == -1)
		return -1;
	log_warnx("issuer \"%s\": deactivating account %s", ai->ai_name,
	    ai->ai_kid);
	acme_account_send(ai, "deactivation", ai->ai_kid,
	    "{\"status\":\"deactivated\"}", 0, acme_account_gone, cb, arg);
	return 0;
}

/*
 * The user removed account.deactivated: forget the old account and start
 * over, which registers a new one (its key was set aside with it).
 */
static void
acme_account_reactivate(struct acme_issuer *ai)
{
	char	*url = NULL, *cause = NULL;
	int	 rc;

	rc = store_load_deactivated(ai->ai_conf->ci_state_path, &url, &cause);
	free(url);
	free(cause);
	if (rc != 1)
		return;
	log_info("issuer \"%s\": %s/account.deactivated is gone; a new "
	    "account is registered", ai->ai_name, ai->ai_conf->ci_state_path);
	free(ai->ai_deactivated);
	ai->ai_deactivated = NULL;
	acme_account_unload(ai);
	json_decref(ai->ai_ca_contact);
	ai->ai_ca_contact = NULL;
	free(ai->ai_ca_status);
	ai->ai_ca_status = NULL;
	acme_boot(ai);
}

/* Whoever asked no longer waits (the control socket is stopping). */
void
acme_account_forget(struct acme_issuer *ai)
{
	ai->ai_acct_cb = NULL;
	ai->ai_acct_arg = NULL;
}

/* Deactivated: what orders have queued fails, on the next turn. */
static void
acme_fail_queued(int fd, short ev, void *arg)
{
	struct acme_issuer	*ai = arg;
	struct acme_reply	 r;
	struct acme_req		*ar;
	char			*why;

	(void)fd;
	(void)ev;
	xasprintf(&why, "issuer \"%s\": account %s is deactivated; remove "
	    "%s/account.deactivated and reload to register a new one",
	    ai->ai_name, ai->ai_deactivated, ai->ai_conf->ci_state_path);
	memset(&r, 0, sizeof(r));
	r.error = why;
	while ((ar = TAILQ_FIRST(&ai->ai_queue)) != NULL ||
	    (ar = TAILQ_FIRST(&ai->ai_order_queue)) != NULL) {
		TAILQ_REMOVE(acme_req_queue(ar), ar, ar_entry);
		acme_req_finish(ar, &r);
	}
	free(why);
}

/* The configured contact, as the JSON array newAccount sends. */
static json_t *
acme_contact_conf(const struct acme_issuer *ai)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; i < ai->ai_conf->ci_ncontact; i++)
		json_array_append_new(a,
		    json_string(ai->ai_conf->ci_contact[i]));
	return a;
}

static void	 acme_contact_got(const struct acme_reply *, void *);
static void	 acme_contact_updated(const struct acme_reply *, void *);

/*
 * Contact (RFC 8555 7.3.2): the account's contact at the CA follows the
 * configuration.  It is read once (POST-as-GET) after the account is
 * ready, then updated only when it differs, which it also is checked
 * for after every reload.
 */
static void
acme_contact_check(struct acme_issuer *ai)
{
	json_t	*want, *o;
	char	*payload;

	if (ai->ai_contact_req != NULL || ai->ai_kid == NULL ||
	    ai->ai_state != ISSUER_READY)
		return;
	if (ai->ai_ca_contact == NULL) {
		ai->ai_contact_req = acme_post(ai, ai->ai_kid, NULL, NULL,
		    acme_contact_got, ai);
		return;
	}
	want = acme_contact_conf(ai);
	if (json_equal(want, ai->ai_ca_contact)) {
		json_decref(want);
		return;
	}
	json_decref(ai->ai_contact_sent);
	ai->ai_contact_sent = json_incref(want);
	o = json_pack("{s:o}", "contact", want);	/* takes want */
	if (o == NULL || (payload = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	json_decref(o);
	ai->ai_contact_req = acme_post(ai, ai->ai_kid, payload, NULL,
	    acme_contact_updated, ai);
	free(payload);
}

/* The account object's contact (absent: none) and status, kept. */
static int
acme_contact_keep(struct acme_issuer *ai, const struct acme_reply *r)
{
	json_t		*c;
	const char	*status;

	if ((r->status != 200 && r->status != 201) || !json_is_object(r->json))
		return -1;
	c = json_object_get(r->json, "contact");
	json_decref(ai->ai_ca_contact);
	ai->ai_ca_contact = json_is_array(c) ? json_incref(c) : json_array();
	if ((status = json_string_value(json_object_get(r->json,
	    "status"))) != NULL) {
		free(ai->ai_ca_status);
		ai->ai_ca_status = xstrdup(status);
	}
	return 0;
}

static void
acme_contact_got(const struct acme_reply *r, void *arg)
{
	struct acme_issuer	*ai = arg;
	char			*why;

	ai->ai_contact_req = NULL;
	if (acme_contact_keep(ai, r) == -1) {
		why = acme_reply_describe(r);
		log_warnx("issuer \"%s\": reading account %s: %s", ai->ai_name,
		    ai->ai_kid, why);
		free(why);
		return;
	}
	acme_contact_check(ai);
}

static void
acme_contact_updated(const struct acme_reply *r, void *arg)
{
	struct acme_issuer	*ai = arg;
	char			*why, *list;

	ai->ai_contact_req = NULL;
	if (acme_contact_keep(ai, r) == -1) {
		why = acme_reply_describe(r);
		log_warnx("issuer \"%s\": updating the contact of account %s: "
		    "%s", ai->ai_name, ai->ai_kid, why);
		free(why);
		return;
	}
	/*
	 * A CA may leave contact out of the object it answers with (Pebble
	 * does when it is empty, a CA that keeps no contact always does):
	 * after a 200 it is taken to hold what was sent, so one change
	 * makes one update, never a loop of them.
	 */
	json_decref(ai->ai_ca_contact);
	ai->ai_ca_contact = ai->ai_contact_sent;
	ai->ai_contact_sent = NULL;
	if ((list = json_dumps(ai->ai_ca_contact, JSON_COMPACT)) == NULL)
		fatalx("%s: json_dumps", __func__);
	log_info("issuer \"%s\": account %s: contact updated at the CA to %s",
	    ai->ai_name, ai->ai_kid, list);
	free(list);
	/* A reload may have changed it again meanwhile. */
	acme_contact_check(ai);
}

/* GET /v1/issuers/{id}/account. */
json_t *
acme_account_json(const struct acme_issuer *ai)
{
	const char	*url = ai->ai_kid != NULL ? ai->ai_kid : ai->ai_deactivated;
	const char	*status = ai->ai_ca_status;
	enum key_type	 type;
	json_t		*j;

	if (ai->ai_state == ISSUER_DEACTIVATED)
		status = "deactivated";
	j = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:b, "
	    "s:o}",
	    "issuer", ai->ai_name,
	    "state", issuer_state_names[ai->ai_state],
	    "url", url != NULL ? json_string(url) : json_null(),
	    "status", status != NULL ? json_string(status) : json_null(),
	    "key_type", ai->ai_key != NULL &&
	    store_key_type(ai->ai_key, &type) == 0 ?
	    json_string(key_type_name(type)) : json_null(),
	    "thumbprint", ai->ai_thumbprint != NULL ?
	    json_string(ai->ai_thumbprint) : json_null(),
	    "contact", ai->ai_ca_contact != NULL ?
	    json_incref(ai->ai_ca_contact) : json_null(),
	    "configured_contact", acme_contact_conf(ai),
	    "key_file", ai->ai_conf->ci_account_key_file != NULL ?
	    json_string(ai->ai_conf->ci_account_key_file) : json_null(),
	    "shared_by_cluster", acme_fleet_shares_account(ai),
	    "operation", ai->ai_acct_op != NULL ?
	    json_string(ai->ai_acct_op) : json_null());
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}
