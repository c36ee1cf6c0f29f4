/*
 * What replicas share through Redis, on top of cluster.c's link: leases
 * with fencing tokens, certificates and orders written under them, and
 * challenge tokens that every live replica acknowledges.
 *
 * Leases.  PREFIX:lease:ID holds "HOLDER FENCE" for CLUSTER_LEASE_TTL,
 * set only when absent (or already ours), with FENCE taken from INCR of
 * PREFIX:fence:ID.  HOLDER is the node's name and a number drawn at start,
 * so a restarted node waits for its former self's leases to expire like
 * any other node.  Held leases are renewed every CLUSTER_LEASE_RENEW
 * seconds; one found in another's hands is lost, and its order stops.
 *
 * Fencing.  A certificate or an order is written by a Lua script that
 * first checks that PREFIX:fence:ID still equals the writer's fence:
 * a node that slept past its lease finds a newer fence and its write is
 * refused, whatever it has in hand.  The same script publishes the change.
 *
 * ARI.  PREFIX:ari:ID, what renewalInfo last said of the certificate, is
 * written like a certificate: under the certificate's lease and fence, so
 * the node that asked the CA is the only one that did, and a node that
 * slept past its lease cannot overwrite a newer answer.
 *
 * Messages on PREFIX:events, each "KIND ARG NODE": "cert ID", "ari ID",
 * "token T", "untoken T", "runtime -".  A node ignores its own.
 */
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/rand.h>

#include "sidecar.h"

/*
 * KEYS lease, fence; ARGV holder, ttl ms.  Returns {1, value[, why]}
 * granted, {0, value} held by another, {2, why} the fence is not a
 * counter.  A lease key that holds no lease (another type, or not
 * "HOLDER FENCE") would block the certificate for good, having no TTL:
 * it is taken over, and why says what it held.
 */
static const char sync_lua_take[] =
    "local cur = redis.pcall('GET', KEYS[1])\n"
    "local why = false\n"
    "if type(cur) == 'table' then\n"
    "  why = 'not a string'\n"
    "  cur = false\n"
    "elseif cur and not string.match(cur, '^%S+ %d+$') then\n"
    "  why = 'not a lease'\n"
    "  cur = false\n"
    "end\n"
    "if cur then\n"
    "  if string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then\n"
    "    redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "    return {1, cur}\n"
    "  end\n"
    "  return {0, cur}\n"
    "end\n"
    "local f = redis.pcall('INCR', KEYS[2])\n"
    "if type(f) == 'table' then\n"
    "  return {2, 'not a whole number'}\n"
    "end\n"
    "local v = ARGV[1] .. ' ' .. f\n"
    "redis.call('SET', KEYS[1], v, 'PX', ARGV[2])\n"
    "return {1, v, why}\n";

/*
 * KEYS lease, fence; ARGV holder, fence, ttl ms.  A lease that expired
 * while Redis was away is taken back only if no one took a newer fence.
 */
static const char sync_lua_renew[] =
    "local want = ARGV[1] .. ' ' .. ARGV[2]\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == want then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "  return 1\n"
    "end\n"
    "if not cur and redis.call('GET', KEYS[2]) == ARGV[2] then\n"
    "  redis.call('SET', KEYS[1], want, 'PX', ARGV[3])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* KEYS lease; ARGV holder, fence. */
static const char sync_lua_release[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 1\n";

/*
 * KEYS fence, target[, gone]; ARGV fence, value, channel, message.
 * Written only under the newest fence; gone (the order a certificate
 * completes) goes in the same step.
 */
static const char sync_lua_put[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return 0\n"
    "end\n"
    "redis.call('SET', KEYS[2], ARGV[2])\n"
    "if KEYS[3] then\n"
    "  redis.call('DEL', KEYS[3])\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "return 1\n";

/*
 * KEYS order, cert, ari: the values, where a key of another type answers
 * its error (MGET would answer nil, as for a key that is not there).
 */
static const char sync_lua_get3[] =
    "return {redis.pcall('GET', KEYS[1]), redis.pcall('GET', KEYS[2]),\n"
    "    redis.pcall('GET', KEYS[3])}\n";

/*
 * KEYS members, ack; ARGV now (ms).  Returns {live, {missing...}}: the
 * live members that have not acknowledged a token, read afresh each time
 * so that a node joining meanwhile is waited for too.
 */
static const char sync_lua_missing[] =
    "local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')\n"
    "local missing = {}\n"
    "for _, n in ipairs(live) do\n"
    "  if redis.call('SISMEMBER', KEYS[2], n) == 0 then\n"
    "    table.insert(missing, n)\n"
    "  end\n"
    "end\n"
    "return {#live, missing}\n";

enum lease_state {
	LEASE_ASKING,
	LEASE_HELD,
	LEASE_ENDED,		/* refused, lost or released */
	LEASE_STATE_MAX
};

struct cluster_lease {
	char			*cl_id;
	enum lease_state	 cl_state;
	uint64_t		 cl_fence;
	cluster_lease_cb	 cl_cb;
	void			*cl_arg;
	struct cluster_cmd	*cl_cmd;	/* take or renew in flight */
	time_t			 cl_renew_at;
	TAILQ_ENTRY(cluster_lease) cl_entry;
};
TAILQ_HEAD(cluster_leases, cluster_lease);

/* A challenge token this node published, waiting for acknowledgements. */
struct cluster_token {
	char			*ct_token;
	cluster_token_cb	 ct_cb;
	void			*ct_arg;
	struct event		*ct_ev;
	struct cluster_cmd	*ct_cmd;
	time_t			 ct_deadline;
};

/* A token another node published, in this node's responders. */
struct sync_remote_token {
	char			*rt_token;
	time_t			 rt_expires;
	TAILQ_ENTRY(sync_remote_token) rt_entry;
};
TAILQ_HEAD(sync_remote_tokens, sync_remote_token);

static struct {
	const struct cluster_sync_hooks *hooks;
	char			 holder[CLUSTER_NAME_MAX + 32];
	struct cluster_leases	 leases;
	size_t			 nleases;
	struct sync_remote_tokens remote;
	struct event_base	*base;
	int			 secret_ok;	/* -1 not checked yet */
} sync;

static int
sync_publish_args(const char *kind, const char *arg, char **channel,
    char **msg)
{
	*channel = cluster_keyname("events", NULL);
	xasprintf(msg, "%s %s %s", kind, arg, cluster_node());
	return 0;
}

static void
sync_ignore(const struct redisReply *r, void *arg)
{
	cluster_reply_failed(r, arg);
}

/* Leases. */

static void
sync_lease_end(struct cluster_lease *l, enum cluster_lease_event ev)
{
	if (l->cl_state == LEASE_HELD) {
		TAILQ_REMOVE(&sync.leases, l, cl_entry);
		sync.nleases--;
	}
	l->cl_state = LEASE_ENDED;
	if (l->cl_cb != NULL)
		l->cl_cb(ev, l->cl_arg);
}

/* "HOLDER FENCE": the fence, or 0 if value is not of that shape. */
static uint64_t
sync_lease_fence(const char *value)
{
	const char	*sp = strrchr(value, ' ');
	char		*end;
	unsigned long long v;

	if (sp == NULL || sp[1] == '\0')
		return 0;
	v = strtoull(sp + 1, &end, 10);
	return *end == '\0' ? (uint64_t)v : 0;
}

/* A value under a lease's keys that is none of ours. */
static void
sync_lease_bad_value(const struct cluster_lease *l, const char *kind,
    const char *why, const char *what_now)
{
	char	*key = cluster_keyname(kind, l->cl_id);

	log_warnx("cluster: %s: ignored: %s; %s", key, why, what_now);
	free(key);
}

static void
sync_lease_taken(const struct redisReply *r, void *arg)
{
	struct cluster_lease	*l = arg;
	const struct redisReply	*granted, *value;
	char			*what;

	l->cl_cmd = NULL;
	xasprintf(&what, "lease of \"%s\"", l->cl_id);
	if (cluster_reply_failed(r, what)) {
		free(what);
		sync_lease_end(l, LEASE_UNAVAILABLE);
		return;
	}
	free(what);
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
	    (granted = r->element[0])->type != REDIS_REPLY_INTEGER ||
	    (value = r->element[1])->type != REDIS_REPLY_STRING) {
		log_warnx("cluster: lease of \"%s\": unexpected answer",
		    l->cl_id);
		sync_lease_end(l, LEASE_UNAVAILABLE);
		return;
	}
	if (granted->integer == 2) {
		sync_lease_bad_value(l, "fence", value->str,
		    "its certificate takes no lease until it is deleted");
		sync_lease_end(l, LEASE_UNAVAILABLE);
		return;
	}
	if (r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING)
		sync_lease_bad_value(l, "lease", r->element[2]->str,
		    "taken over");
	if (!granted->integer) {
		log_debug("cluster: \"%s\" is leased by %s",
		    l->cl_id, value->str);
		sync_lease_end(l, LEASE_BUSY);
		return;
	}
	if ((l->cl_fence = sync_lease_fence(value->str)) == 0) {
		log_warnx("cluster: lease of \"%s\": \"%s\" holds no fence",
		    l->cl_id, value->str);
		sync_lease_end(l, LEASE_UNAVAILABLE);
		return;
	}
	log_debug("cluster: lease of \"%s\" taken, fence %llu",
	    l->cl_id, (unsigned long long)l->cl_fence);
	l->cl_state = LEASE_HELD;
	l->cl_renew_at = util_now() + CLUSTER_LEASE_RENEW;
	TAILQ_INSERT_TAIL(&sync.leases, l, cl_entry);
	sync.nleases++;
	l->cl_cb(LEASE_GRANTED, l->cl_arg);
}

static struct cluster_cmd *
sync_eval(cluster_reply_cb cb, void *arg, const char *script, int nkeys,
    const char **keys, int nargs, const char **args)
{
	const char	*argv[CLUSTER_MAX_ARGS];
	size_t		 lens[CLUSTER_MAX_ARGS];
	char		 n[8];
	int		 argc = 0, i;

	snprintf(n, sizeof(n), "%d", nkeys);
	argv[argc++] = "EVAL";
	argv[argc++] = script;
	argv[argc++] = n;
	for (i = 0; i < nkeys; i++)
		argv[argc++] = keys[i];
	for (i = 0; i < nargs; i++)
		argv[argc++] = args[i];
	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	return cluster_command_argv(cb, arg, argc, argv, lens);
}

/* Why cluster_lease_take() gives nothing now, for logs and status. */
const char *
cluster_lease_refusal(void)
{
	if (!cluster_up())
		return "Redis is out of reach";
	if (sync.secret_ok == 0)
		return "this node's secret_file is not the fleet's";
	if (sync.secret_ok == -1)
		return "the fleet's secret check has not been read yet";
	return "Redis did not grant it";
}

/*
 * Ask for the lease of certificate id.  cb hears once whether it is
 * granted, busy or out of reach, and later LEASE_LOST if it is lost.
 * The caller owns the lease and gives it back with cluster_lease_release()
 * whatever happened.  NULL, with no callback, when Redis is away.
 */
struct cluster_lease *
cluster_lease_take(const char *id, cluster_lease_cb cb, void *arg)
{
	struct cluster_lease	*l;
	char			*keys[2], ttl[16];
	const char		*args[2];

	/* Not before the secret check said yes (sync_seal_check()). */
	if (sync.secret_ok != 1)
		return NULL;
	l = xcalloc(1, sizeof(*l));
	l->cl_id = xstrdup(id);
	l->cl_cb = cb;
	l->cl_arg = arg;
	l->cl_state = LEASE_ASKING;
	keys[0] = cluster_keyname("lease", id);
	keys[1] = cluster_keyname("fence", id);
	snprintf(ttl, sizeof(ttl), "%d", CLUSTER_LEASE_TTL * 1000);
	args[0] = sync.holder;
	args[1] = ttl;
	l->cl_cmd = sync_eval(sync_lease_taken, l, sync_lua_take, 2,
	    (const char **)keys, 2, args);
	free(keys[0]);
	free(keys[1]);
	if (l->cl_cmd == NULL) {
		free(l->cl_id);
		free(l);
		return NULL;
	}
	return l;
}

int
cluster_lease_held(const struct cluster_lease *l)
{
	return l != NULL && l->cl_state == LEASE_HELD;
}

uint64_t
cluster_lease_fence(const struct cluster_lease *l)
{
	return l->cl_fence;
}

void
cluster_lease_release(struct cluster_lease *l)
{
	char		*key, fence[24];
	const char	*args[2];

	if (l == NULL)
		return;
	cluster_cancel(l->cl_cmd);
	if (l->cl_state == LEASE_HELD) {
		TAILQ_REMOVE(&sync.leases, l, cl_entry);
		sync.nleases--;
		key = cluster_keyname("lease", l->cl_id);
		snprintf(fence, sizeof(fence), "%llu",
		    (unsigned long long)l->cl_fence);
		args[0] = sync.holder;
		args[1] = fence;
		sync_eval(sync_ignore, (void *)"releasing a lease",
		    sync_lua_release, 1, (const char **)&key, 2, args);
		free(key);
	}
	free(l->cl_id);
	free(l);
}

static void
sync_lease_renewed(const struct redisReply *r, void *arg)
{
	struct cluster_lease	*l = arg;

	l->cl_cmd = NULL;
	/* No answer: Redis is away, and so is everyone else's claim. */
	if (r == NULL || r->type != REDIS_REPLY_INTEGER)
		return;
	if (r->integer == 1) {
		l->cl_renew_at = util_now() + CLUSTER_LEASE_RENEW;
		return;
	}
	log_warnx("cluster: certificate \"%s\": lost the lease (fence %llu) "
	    "to another node; stopping this node's order", l->cl_id,
	    (unsigned long long)l->cl_fence);
	sync_lease_end(l, LEASE_LOST);
}

static void
sync_lease_renew_all(void)
{
	struct cluster_lease	*l;
	char			*keys[2], fence[24], ttl[16];
	const char		*args[3];

	snprintf(ttl, sizeof(ttl), "%d", CLUSTER_LEASE_TTL * 1000);
	TAILQ_FOREACH(l, &sync.leases, cl_entry) {
		if (l->cl_cmd != NULL || util_now() < l->cl_renew_at)
			continue;
		keys[0] = cluster_keyname("lease", l->cl_id);
		keys[1] = cluster_keyname("fence", l->cl_id);
		snprintf(fence, sizeof(fence), "%llu",
		    (unsigned long long)l->cl_fence);
		args[0] = sync.holder;
		args[1] = fence;
		args[2] = ttl;
		l->cl_cmd = sync_eval(sync_lease_renewed, l, sync_lua_renew, 2,
		    (const char **)keys, 3, args);
		free(keys[0]);
		free(keys[1]);
	}
}

size_t
cluster_lease_count(void)
{
	return sync.nleases;
}

/* Fenced writes. */

/* A write or a read whose caller may stop waiting (cluster_op_cancel()). */
struct cluster_op {
	cluster_put_cb	 op_put;
	cluster_state_cb op_state;
	void		*op_arg;
	char		*op_id;
	char		*op_what;
};

static struct cluster_op *
sync_op_new(const char *id, const char *what)
{
	struct cluster_op	*op;

	op = xcalloc(1, sizeof(*op));
	op->op_id = xstrdup(id);
	op->op_what = xstrdup(what);
	return op;
}

static void
sync_op_free(struct cluster_op *op)
{
	free(op->op_id);
	free(op->op_what);
	free(op);
}

void
cluster_op_cancel(struct cluster_op *op)
{
	if (op == NULL)
		return;
	op->op_put = NULL;
	op->op_state = NULL;
}

static void
sync_put_done(const struct redisReply *r, void *arg)
{
	struct cluster_op	*op = arg;
	int			 rc;

	if (cluster_reply_failed(r, op->op_what))
		rc = -1;
	else if (r->type != REDIS_REPLY_INTEGER)
		rc = -1;
	else
		rc = r->integer == 1 ? 1 : 0;
	if (op->op_put != NULL)
		op->op_put(rc, op->op_arg);
	sync_op_free(op);
}

static struct cluster_op *
sync_put(struct cluster_lease *l, const char *kind, const char *value,
    const char *gone, cluster_put_cb cb, void *arg)
{
	struct cluster_op	*op;
	char			*keys[3], fence[24], *channel, *msg;
	const char		*args[4];

	keys[0] = cluster_keyname("fence", l->cl_id);
	keys[1] = cluster_keyname(kind, l->cl_id);
	keys[2] = gone != NULL ? cluster_keyname(gone, l->cl_id) : NULL;
	op = sync_op_new(l->cl_id, keys[1]);
	op->op_put = cb;
	op->op_arg = arg;
	snprintf(fence, sizeof(fence), "%llu", (unsigned long long)l->cl_fence);
	sync_publish_args(kind, l->cl_id, &channel, &msg);
	args[0] = fence;
	args[1] = value;
	args[2] = channel;
	args[3] = msg;
	if (sync_eval(sync_put_done, op, sync_lua_put, gone != NULL ? 3 : 2,
	    (const char **)keys, 4, args) == NULL) {
		sync_op_free(op);
		op = NULL;
	}
	free(keys[0]);
	free(keys[1]);
	free(keys[2]);
	free(channel);
	free(msg);
	return op;
}

/*
 * Write the certificate in rec under lease l, and forget the order that
 * made it, in one step.  cb: 1 written, 0 refused (a newer fence), -1 no
 * answer.  NULL, with no callback, when the link is down.
 */
struct cluster_op *
cluster_put_cert(struct cluster_lease *l, const struct cluster_rec *rec,
    cluster_put_cb cb, void *arg)
{
	struct cluster_op	*cmd;
	char			*name, *json;

	name = cluster_keyname("cert", l->cl_id);
	json = cluster_rec_cert_json(name, rec);
	free(name);
	if (json == NULL)
		return NULL;
	cmd = sync_put(l, "cert", json, "order", cb, arg);
	free(json);
	return cmd;
}

/* What renewalInfo said of the certificate, fenced like a certificate. */
struct cluster_op *
cluster_put_ari(struct cluster_lease *l, const struct ari_state *as,
    cluster_put_cb cb, void *arg)
{
	struct cluster_op	*cmd;
	char			*json;

	json = cluster_rec_ari_json(l->cl_id, as, l->cl_fence);
	cmd = sync_put(l, "ari", json, NULL, cb, arg);
	free(json);
	return cmd;
}

struct cluster_op *
cluster_put_order(struct cluster_lease *l, const struct cluster_rec *rec,
    cluster_put_cb cb, void *arg)
{
	struct cluster_op	*cmd;
	char			*name, *json;

	name = cluster_keyname("order", l->cl_id);
	json = cluster_rec_order_json(name, rec);
	free(name);
	if (json == NULL)
		return NULL;
	cmd = sync_put(l, "order", json, NULL, cb, arg);
	free(json);
	return cmd;
}

/* Reads: an id's order, certificate and ARI record, checked. */

/* Parse one value read back; a bad one is logged with its key. */
static int
sync_parse(const char *kind, const char *id, const struct redisReply *v,
    struct cluster_rec *rec, struct ari_state *ari)
{
	char	*name, *cause = NULL;
	int	 rc;

	if (v->type == REDIS_REPLY_NIL)
		return 0;
	name = cluster_keyname(kind, id);
	if (v->type != REDIS_REPLY_STRING)
		rc = -1, cause = xstrdup("not a string");
	else if (strcmp(kind, "ari") == 0)
		rc = cluster_rec_ari_parse(id, v->str, v->len, ari, &cause);
	else if (strcmp(kind, "cert") == 0)
		rc = cluster_rec_cert_parse(name, id, v->str, v->len, rec,
		    &cause);
	else
		rc = cluster_rec_order_parse(name, id, v->str, v->len, rec,
		    &cause);
	if (rc == -1)
		log_warnx("cluster: %s: ignored: %s", name, cause);
	free(cause);
	free(name);
	return rc == 0 ? 1 : 0;
}

static void
sync_got(const struct redisReply *r, void *arg)
{
	struct cluster_op	*op = arg;
	struct cluster_rec	 order, cert;
	struct ari_state	 ari;
	int			 have_order = 0, have_cert = 0, have_ari = 0;
	int			 rc = 0;

	memset(&order, 0, sizeof(order));
	memset(&cert, 0, sizeof(cert));
	memset(&ari, 0, sizeof(ari));
	if (cluster_reply_failed(r, op->op_what) ||
	    r->type != REDIS_REPLY_ARRAY || r->elements != 3)
		rc = -1;
	else if (op->op_state != NULL) {
		have_order = sync_parse("order", op->op_id, r->element[0],
		    &order, NULL);
		have_cert = sync_parse("cert", op->op_id, r->element[1], &cert,
		    NULL);
		have_ari = sync_parse("ari", op->op_id, r->element[2], NULL,
		    &ari);
	}
	if (op->op_state != NULL)
		op->op_state(rc, have_order ? &order : NULL,
		    have_cert ? &cert : NULL, have_ari ? &ari : NULL,
		    op->op_arg);
	cluster_rec_clear(&order);
	cluster_rec_clear(&cert);
	ari_state_clear(&ari);
	sync_op_free(op);
}

/*
 * cb(rc, order, certificate, ARI record, each or NULL): what Redis holds
 * for id.
 */
struct cluster_op *
cluster_get_state(const char *id, cluster_state_cb cb, void *arg)
{
	struct cluster_op	*op;
	char			*k1, *k2, *k3;
	const char		*keys[3];

	keys[0] = k1 = cluster_keyname("order", id);
	keys[1] = k2 = cluster_keyname("cert", id);
	keys[2] = k3 = cluster_keyname("ari", id);
	op = sync_op_new(id, k2);
	op->op_state = cb;
	op->op_arg = arg;
	if (sync_eval(sync_got, op, sync_lua_get3, 3, keys, 0, NULL) == NULL) {
		sync_op_free(op);
		op = NULL;
	}
	free(k1);
	free(k2);
	free(k3);
	return op;
}

/* Challenge tokens: published, acknowledged by every live member. */

static void	 sync_token_check(struct cluster_token *);

static void
sync_token_finish(struct cluster_token *ct, int all)
{
	cluster_token_cb	 cb = ct->ct_cb;

	ct->ct_cb = NULL;
	event_del(ct->ct_ev);
	if (cb != NULL)
		cb(all, ct->ct_arg);
}

static void
sync_token_acks(const struct redisReply *r, void *arg)
{
	struct cluster_token	*ct = arg;
	struct timeval		 tv = { 0, CLUSTER_TOKEN_POLL_MS * 1000 };
	long long		 live = -1;
	size_t			 missing = 0;
	const char		*first = "?";
	int			 settling;

	ct->ct_cmd = NULL;
	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER &&
	    r->element[1]->type == REDIS_REPLY_ARRAY) {
		live = r->element[0]->integer;
		missing = r->element[1]->elements;
		if (missing > 0 &&
		    r->element[1]->element[0]->type == REDIS_REPLY_STRING)
			first = r->element[1]->element[0]->str;
	}
	settling = cluster_settle_until() != 0;
	if (live > 0 && missing == 0 && !settling) {
		log_debug("cluster: token %s is on all %lld nodes",
		    ct->ct_token, live);
		sync_token_finish(ct, 1);
		return;
	}
	/* Away: nobody could acknowledge it; the caller waits for Redis. */
	if (live < 0 && !cluster_up()) {
		sync_token_finish(ct, 0);
		return;
	}
	if (util_now() >= ct->ct_deadline) {
		if (live > 0 && missing == 0)
			log_warnx("cluster: token %s: nodes seen before the "
			    "drop are not back; validating anyway",
			    ct->ct_token);
		else if (live < 0)
			log_warnx("cluster: token %s: Redis did not answer "
			    "within %ds; validating anyway", ct->ct_token,
			    CLUSTER_TOKEN_WAIT);
		else
			log_warnx("cluster: token %s: %zu of %lld live nodes "
			    "did not acknowledge it within %ds (the first: %s); "
			    "validating anyway", ct->ct_token, missing, live,
			    CLUSTER_TOKEN_WAIT, first);
		sync_token_finish(ct, 0);
		return;
	}
	evtimer_add(ct->ct_ev, &tv);
}

static void
sync_token_check(struct cluster_token *ct)
{
	char	*keys[2], now[32];
	const char *args[1];

	if (ct->ct_cb == NULL || ct->ct_cmd != NULL)
		return;
	keys[0] = cluster_keyname("members", NULL);
	keys[1] = cluster_keyname("ack", ct->ct_token);
	snprintf(now, sizeof(now), "%lld", (long long)util_now() * 1000);
	args[0] = now;
	ct->ct_cmd = sync_eval(sync_token_acks, ct, sync_lua_missing, 2,
	    (const char **)keys, 1, args);
	free(keys[0]);
	free(keys[1]);
	if (ct->ct_cmd == NULL)
		sync_token_acks(NULL, ct);
}

static void
sync_token_timer(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	sync_token_check(arg);
}

/*
 * Publish token and its key authorization for every replica, and call cb
 * once every live member has it in its zone (all = 1), or after
 * CLUSTER_TOKEN_WAIT seconds (CLUSTER_SETTLE_MAX, back from a drop), or
 * at once when Redis is away (all = 0, and cluster_up() false).
 */
struct cluster_token *
cluster_token_share(const char *token, const char *keyauth,
    cluster_token_cb cb, void *arg)
{
	struct cluster_token	*ct;
	char			*tkey, *akey, ttl[16], *channel, *msg;

	ct = xcalloc(1, sizeof(*ct));
	ct->ct_token = xstrdup(token);
	ct->ct_cb = cb;
	ct->ct_arg = arg;
	/* Back from a drop, the nodes seen before may take longer. */
	ct->ct_deadline = util_now() + CLUSTER_TOKEN_WAIT;
	if (cluster_settle_until() > ct->ct_deadline)
		ct->ct_deadline = cluster_settle_until();
	if ((ct->ct_ev = evtimer_new(sync.base, sync_token_timer, ct)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	tkey = cluster_keyname("token", token);
	akey = cluster_keyname("ack", token);
	snprintf(ttl, sizeof(ttl), "%d", CLUSTER_TOKEN_TTL);
	sync_publish_args("token", token, &channel, &msg);
	/* In order on one connection: the ack set is ready before anyone reads. */
	cluster_command(sync_ignore, (void *)"sharing a token", "SET", tkey,
	    keyauth, "EX", ttl, NULL);
	cluster_command(sync_ignore, (void *)"sharing a token", "DEL", akey,
	    NULL);
	cluster_command(sync_ignore, (void *)"sharing a token", "SADD", akey,
	    cluster_node(), NULL);
	cluster_command(sync_ignore, (void *)"sharing a token", "EXPIRE", akey,
	    ttl, NULL);
	cluster_command(sync_ignore, (void *)"sharing a token", "PUBLISH",
	    channel, msg, NULL);
	free(tkey);
	free(akey);
	free(channel);
	free(msg);
	sync_token_check(ct);
	return ct;
}

void
cluster_token_drop(struct cluster_token *ct)
{
	char	*tkey, *akey, *channel, *msg;

	if (ct == NULL)
		return;
	cluster_cancel(ct->ct_cmd);
	tkey = cluster_keyname("token", ct->ct_token);
	akey = cluster_keyname("ack", ct->ct_token);
	sync_publish_args("untoken", ct->ct_token, &channel, &msg);
	cluster_command(sync_ignore, (void *)"dropping a token", "DEL", tkey,
	    akey, NULL);
	cluster_command(sync_ignore, (void *)"dropping a token", "PUBLISH",
	    channel, msg, NULL);
	free(tkey);
	free(akey);
	free(channel);
	free(msg);
	event_free(ct->ct_ev);
	free(ct->ct_token);
	free(ct);
}

/* Tokens other nodes published. */

static struct sync_remote_token *
sync_remote_find(const char *token)
{
	struct sync_remote_token	*rt;

	TAILQ_FOREACH(rt, &sync.remote, rt_entry)
		if (strcmp(rt->rt_token, token) == 0)
			return rt;
	return NULL;
}

static void
sync_remote_remove(struct sync_remote_token *rt)
{
	challenge_remove(rt->rt_token);
	shm_token_remove(rt->rt_token);
	TAILQ_REMOVE(&sync.remote, rt, rt_entry);
	free(rt->rt_token);
	free(rt);
}

/* Whether r holds a key authorization for token; logged if not. */
static int
sync_remote_valid(const char *token, const struct redisReply *r)
{
	if (r == NULL || r->type != REDIS_REPLY_STRING) {
		if (r != NULL && r->type != REDIS_REPLY_NIL)
			log_warnx("cluster: %s:token:%s: ignored: not a "
			    "string", cluster_keyname_prefix(), token);
		return 0;
	}
	if (!cluster_rec_keyauth_ok(token, r->str, r->len)) {
		log_warnx("cluster: %s:token:%s: ignored: not a key "
		    "authorization for that token", cluster_keyname_prefix(),
		    token);
		return 0;
	}
	return 1;
}

/* Another node's token: served here too, then acknowledged. */
static void
sync_remote_learn(const char *token, const char *keyauth)
{
	struct sync_remote_token	*rt;
	char				*akey;

	if ((rt = sync_remote_find(token)) == NULL) {
		rt = xcalloc(1, sizeof(*rt));
		rt->rt_token = xstrdup(token);
		TAILQ_INSERT_TAIL(&sync.remote, rt, rt_entry);
		/* Once: challenge_remove() is called once per token. */
		challenge_add(token, keyauth);
		shm_token_add(token, keyauth);
	}
	rt->rt_expires = util_now() + CLUSTER_TOKEN_TTL;
	/* Acknowledge only what nginx can already answer. */
	if (shm_publish() == 0) {
		akey = cluster_keyname("ack", token);
		cluster_command(sync_ignore, (void *)"acknowledging a token",
		    "SADD", akey, cluster_node(), NULL);
		free(akey);
	}
}

static void
sync_remote_got(const struct redisReply *r, void *arg)
{
	char	*token = arg;

	if (sync_remote_valid(token, r))
		sync_remote_learn(token, r->str);
	free(token);
}

/*
 * The HTTP-01 responder asks for a token it does not have: the CA may
 * come before the message that announces it.  cb always gets called,
 * with NULL when Redis has no such token or did not answer.
 */
struct sync_lookup {
	char			*sl_token;
	challenge_found_cb	 sl_cb;
	void			*sl_ctx;
};

static void
sync_lookup_got(const struct redisReply *r, void *arg)
{
	struct sync_lookup	*sl = arg;

	if (sync_remote_valid(sl->sl_token, r)) {
		sync_remote_learn(sl->sl_token, r->str);
		sl->sl_cb(r->str, r->len, sl->sl_ctx);
	} else
		sl->sl_cb(NULL, 0, sl->sl_ctx);
	free(sl->sl_token);
	free(sl);
}

static int
sync_token_lookup(const char *token, challenge_found_cb cb, void *ctx)
{
	struct sync_lookup	*sl;
	char			*key;

	sl = xcalloc(1, sizeof(*sl));
	sl->sl_token = xstrdup(token);
	sl->sl_cb = cb;
	sl->sl_ctx = ctx;
	key = cluster_keyname("token", token);
	if (cluster_command(sync_lookup_got, sl, "GET", key, NULL) == NULL) {
		free(sl->sl_token);
		free(sl);
		free(key);
		return -1;
	}
	free(key);
	return 0;
}

static void
sync_remote_token(const char *token)
{
	char	*key, *arg;

	if (!challenge_token_valid(token))
		return;
	key = cluster_keyname("token", token);
	arg = xstrdup(token);
	if (cluster_command(sync_remote_got, arg, "GET", key, NULL) == NULL)
		free(arg);
	free(key);
}

/* After (re)connecting: the tokens published while this node was away. */
static void
sync_token_scan(const char *cursor);

static void
sync_token_scanned(const struct redisReply *r, void *arg)
{
	const struct redisReply	*keys;
	size_t			 i, skip;

	(void)arg;
	if (cluster_reply_failed(r, "listing the tokens"))
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    (keys = r->element[1])->type != REDIS_REPLY_ARRAY)
		return;
	skip = strlen(cluster_keyname_prefix()) + strlen(":token:");
	for (i = 0; i < keys->elements; i++) {
		if (keys->element[i]->type == REDIS_REPLY_STRING &&
		    keys->element[i]->len > skip)
			sync_remote_token(keys->element[i]->str + skip);
	}
	if (strcmp(r->element[0]->str, "0") != 0)
		sync_token_scan(r->element[0]->str);
}

static void
sync_token_scan(const char *cursor)
{
	char	*pattern;

	pattern = cluster_keyname("token", "*");
	cluster_command(sync_token_scanned, NULL, "SCAN", cursor, "MATCH",
	    pattern, "COUNT", "1000", NULL);
	free(pattern);
}

static void
sync_remote_expire(int all)
{
	struct sync_remote_token	*rt, *next;

	for (rt = TAILQ_FIRST(&sync.remote); rt != NULL; rt = next) {
		next = TAILQ_NEXT(rt, rt_entry);
		if (all || util_now() >= rt->rt_expires)
			sync_remote_remove(rt);
	}
}

/*
 * The fleet's secret: PREFIX:seal holds a value sealed by the first node.
 * A node that cannot open it has another secret_file: it says so once,
 * loudly, and takes no lease, so it never writes over what it cannot read.
 */
#define SYNC_SEAL_CHECK	"acme-sidecar secret check"

static void
sync_seal_checked(const struct redisReply *r, void *arg)
{
	unsigned char	*plain = NULL;
	size_t		 len = 0;
	char		*name = arg, *cause = NULL;

	if (cluster_reply_failed(r, "reading the fleet's secret check")) {
		free(name);
		return;
	}
	if (r->type == REDIS_REPLY_STRING && cluster_unseal(cluster_key(),
	    name, r->str, &plain, &len, &cause) == 0 &&
	    len == strlen(SYNC_SEAL_CHECK) &&
	    memcmp(plain, SYNC_SEAL_CHECK, len) == 0) {
		log_debug("cluster: secret_file matches the fleet's");
		sync.secret_ok = 1;
		/* Now leases may be taken: catch up with everything. */
		sync_token_scan("0");
		if (sync.hooks->sh_up != NULL)
			sync.hooks->sh_up();
	} else {
		if (sync.secret_ok != 0)
			log_warnx("cluster: %s: %s: this node's secret_file is "
			    "not the fleet's; it serves what it has and writes "
			    "nothing to Redis", name, cause != NULL ? cause :
			    "not a sealed check value");
		sync.secret_ok = 0;
	}
	cluster_secret_verdict(sync.secret_ok);
	if (plain != NULL) {
		explicit_bzero(plain, len);
		free(plain);
	}
	free(cause);
	free(name);
}

static void
sync_seal_check(void)
{
	char	*name, *sealed;

	name = cluster_keyname("seal", NULL);
	sealed = cluster_seal(cluster_key(), name, SYNC_SEAL_CHECK,
	    strlen(SYNC_SEAL_CHECK));
	cluster_command(sync_ignore, (void *)"writing the secret check", "SET",
	    name, sealed, "NX", NULL);
	if (cluster_command(sync_seal_checked, name, "GET", name, NULL) == NULL)
		free(name);
	free(sealed);
}

/* The link's events. */

static void
sync_message(const char *msg)
{
	char	 kind[16], arg[CLUSTER_MESSAGE_MAX], node[CLUSTER_NAME_MAX + 1];
	struct sync_remote_token *rt;

	if (sscanf(msg, "%15s %1023s %64s", kind, arg, node) != 3) {
		log_warnx("cluster: unreadable message \"%.64s\" ignored", msg);
		return;
	}
	if (strcmp(node, cluster_node()) == 0)
		return;
	if (strcmp(kind, "token") == 0)
		sync_remote_token(arg);
	else if (strcmp(kind, "untoken") == 0) {
		if ((rt = sync_remote_find(arg)) != NULL)
			sync_remote_remove(rt);
	} else if (strcmp(kind, "cert") == 0 || strcmp(kind, "ari") == 0) {
		/* Either way: read again what Redis holds for it. */
		if (sync.hooks->sh_cert != NULL)
			sync.hooks->sh_cert(arg);
	} else if (strcmp(kind, "runtime") == 0) {
		if (sync.hooks->sh_runtime != NULL)
			sync.hooks->sh_runtime();
	} else if (strcmp(kind, "order") != 0)
		log_debug("cluster: message \"%s\" ignored", kind);
}

/* Connected, or back: the secret check first, then catching up. */
static void
sync_up(void)
{
	sync.secret_ok = -1;
	sync_seal_check();
}

static void
sync_down(void)
{
}

static void
sync_tick(void)
{
	sync_lease_renew_all();
	sync_remote_expire(0);
}

static const struct cluster_hooks sync_link_hooks = {
	sync_up, sync_down, sync_message, sync_tick
};

void
cluster_get_status(struct cluster_status *cs)
{
	cluster_link_status(cs);
	cs->cs_leases = sync.nleases;
}

void
cluster_sync_start(struct event_base *base, struct evdns_base *dns,
    const struct conf_cluster *conf, const struct cluster_sync_hooks *hooks)
{
	unsigned char	 r[4];

	memset(&sync, 0, sizeof(sync));
	TAILQ_INIT(&sync.leases);
	TAILQ_INIT(&sync.remote);
	sync.base = base;
	sync.hooks = hooks;
	sync.secret_ok = -1;
	if (RAND_bytes(r, sizeof(r)) != 1)
		fatalx("%s: RAND_bytes", __func__);
	snprintf(sync.holder, sizeof(sync.holder), "%s#%02x%02x%02x%02x",
	    conf->cl_node, r[0], r[1], r[2], r[3]);
	cluster_start(base, dns, conf, &sync_link_hooks);
	challenge_set_lookup(sync_token_lookup);
}

void
cluster_sync_stop(void)
{
	if (!cluster_enabled())
		return;
	challenge_set_lookup(NULL);
	sync_remote_expire(1);
	cluster_stop();
}
