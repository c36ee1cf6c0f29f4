/*
 * Certificates added or deleted through the control API, fleet-wide.
 *
 * The hash PREFIX:runtime holds one field per certificate, its id, with
 * {"v":1, "issuer":NAME, "identifiers":[...], "key":TYPE} as the value,
 * with "profile":NAME when one was given and "challenge":TYPE ("http-01"
 * or "dns-01") when it overrides the issuer's (older nodes ignore both;
 * without "challenge" the issuer's applies, as before it existed):
 * what POST /v1/certificates was given, checked again by each node as
 * its own POST would be (main.c).  A deletion leaves {"v":1,
 * "deleted":true}: a field that is missing is one Redis lost (a failover,
 * an old AOF), and the nodes that have it put it back, while a deleted
 * one is deleted everywhere.
 *
 * A change is sent after the local save.  Until Redis confirms it, it
 * stays queued and is sent again first thing after a reconnect, before
 * the reconcile reads the hash back: a change made as the link dropped
 * is never undone by the node that made it.
 */
#include <sys/queue.h>

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "sidecar.h"

#define RUNTIME_VERSION		1
#define RUNTIME_VALUE_MAX	65536	/* bytes of one value */
#define RUNTIME_IDENTS_MAX	100	/* names per certificate, as CAs allow */
#define RUNTIME_STRING_MAX	255	/* bytes of a name or a key type */

struct runtime_change {
	char			*rc_id;
	char			*rc_value;
	unsigned int		 rc_gen;	/* which send is confirmed */
	TAILQ_ENTRY(runtime_change) rc_entry;
};
TAILQ_HEAD(runtime_changes, runtime_change);

static struct runtime_changes	 runtime_queue =
    TAILQ_HEAD_INITIALIZER(runtime_queue);
static unsigned int		 runtime_gen;

struct runtime_sent {
	char		*rs_id;
	unsigned int	 rs_gen;
};

static struct runtime_change *
runtime_find(const char *id)
{
	struct runtime_change	*rc;

	TAILQ_FOREACH(rc, &runtime_queue, rc_entry)
		if (strcmp(rc->rc_id, id) == 0)
			return rc;
	return NULL;
}

static void
runtime_change_free(struct runtime_change *rc)
{
	TAILQ_REMOVE(&runtime_queue, rc, rc_entry);
	free(rc->rc_id);
	free(rc->rc_value);
	free(rc);
}

static void
runtime_confirmed(const struct redisReply *r, void *arg)
{
	struct runtime_sent	*rs = arg;
	struct runtime_change	*rc;

	if (!cluster_reply_failed(r, "sharing an API change") &&
	    (rc = runtime_find(rs->rs_id)) != NULL && rc->rc_gen == rs->rs_gen)
		runtime_change_free(rc);
	free(rs->rs_id);
	free(rs);
}

static void
runtime_send(struct runtime_change *rc)
{
	struct runtime_sent	*rs;
	char			*key, *channel, *msg;

	key = cluster_keyname("runtime", NULL);
	rs = xcalloc(1, sizeof(*rs));
	rs->rs_id = xstrdup(rc->rc_id);
	rs->rs_gen = rc->rc_gen;
	if (cluster_command(runtime_confirmed, rs, "HSET", key, rc->rc_id,
	    rc->rc_value, NULL) == NULL) {
		/* Redis is away: queued, sent again once it is back. */
		free(rs->rs_id);
		free(rs);
	}
	channel = cluster_keyname("events", NULL);
	xasprintf(&msg, "runtime - %s", cluster_node());
	cluster_command(NULL, NULL, "PUBLISH", channel, msg, NULL);
	free(channel);
	free(msg);
	free(key);
}

static void
runtime_queue_change(const char *id, char *value)
{
	struct runtime_change	*rc;

	if ((rc = runtime_find(id)) == NULL) {
		rc = xcalloc(1, sizeof(*rc));
		rc->rc_id = xstrdup(id);
		TAILQ_INSERT_TAIL(&runtime_queue, rc, rc_entry);
	}
	free(rc->rc_value);
	rc->rc_value = value;
	rc->rc_gen = ++runtime_gen;
	runtime_send(rc);
}

static char *
runtime_value(const struct conf_cert *cc)
{
	json_t	*o, *idents;
	char	*s;
	size_t	 i;

	idents = json_array();
	for (i = 0; i < cc->cc_nidents; i++)
		json_array_append_new(idents, json_string(cc->cc_idents[i]));
	o = json_pack("{s:i, s:s, s:o, s:s}", "v", RUNTIME_VERSION, "issuer",
	    cc->cc_issuer, "identifiers", idents, "key",
	    key_type_name(cc->cc_key));
	if (o != NULL && cc->cc_profile != NULL)
		json_object_set_new(o, "profile", json_string(cc->cc_profile));
	if (o != NULL && cc->cc_challenge != CHALLENGE_ISSUER)
		json_object_set_new(o, "challenge", json_string(
		    conf_challenge_name((enum challenge_type)cc->cc_challenge)));
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	json_decref(o);
	return s;
}

/* cc was added through this node's API. */
void
cluster_runtime_put(const struct conf_cert *cc)
{
	runtime_queue_change(cc->cc_id, runtime_value(cc));
}

/* id was deleted through this node's API. */
void
cluster_runtime_del(const char *id)
{
	char	*s;

	xasprintf(&s, "{\"v\":%d,\"deleted\":true}", RUNTIME_VERSION);
	runtime_queue_change(id, s);
}

/* After a reconnect: what Redis may have missed, before reading it. */
void
cluster_runtime_resend(void)
{
	struct runtime_change	*rc;

	TAILQ_FOREACH(rc, &runtime_queue, rc_entry)
		runtime_send(rc);
}

/* Whether a change to id is still on its way to Redis. */
int
cluster_runtime_pending(const char *id)
{
	return runtime_find(id) != NULL;
}

void
cluster_runtime_forget(void)
{
	while (!TAILQ_EMPTY(&runtime_queue))
		runtime_change_free(TAILQ_FIRST(&runtime_queue));
}

/* Reading the fleet's set back. */

void
cluster_runtime_clear(struct cluster_runtime *cr)
{
	size_t	 i;

	free(cr->cr_id);
	free(cr->cr_issuer);
	for (i = 0; i < cr->cr_nidents; i++)
		free(cr->cr_idents[i]);
	free(cr->cr_idents);
	free(cr->cr_key);
	free(cr->cr_profile);
	free(cr->cr_challenge);
	memset(cr, 0, sizeof(*cr));
}

static int
runtime_string(json_t *v, size_t max, const char **out)
{
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return -1;
	*out = json_string_value(v);
	return 0;
}

static int
runtime_idents(json_t *a, struct cluster_runtime *cr, char **cause)
{
	const char	*s;
	size_t		 i, n = json_array_size(a);

	if (!json_is_array(a) || n == 0 || n > RUNTIME_IDENTS_MAX) {
		xasprintf(cause, "\"identifiers\" is not a list of 1 to %d "
		    "names", RUNTIME_IDENTS_MAX);
		return -1;
	}
	cr->cr_idents = xcalloc(n, sizeof(*cr->cr_idents));
	for (i = 0; i < n; i++) {
		if (runtime_string(json_array_get(a, i), RUNTIME_STRING_MAX,
		    &s) == -1) {
			xasprintf(cause, "identifier %zu is not a name", i + 1);
			return -1;
		}
		cr->cr_idents[cr->cr_nidents++] = xstrdup(s);
	}
	return 0;
}

/*
 * The value of field id, whole or not at all.  Its shape only: whether
 * the issuer exists and the names are valid is for conf_runtime_add().
 */
int
cluster_runtime_parse(const char *id, const char *text, size_t len,
    struct cluster_runtime *cr, char **cause)
{
	json_error_t	 err;
	json_t		*o;
	const char	*issuer, *key, *profile = NULL, *challenge = NULL;
	int		 rc = -1;

	memset(cr, 0, sizeof(*cr));
	if (len > RUNTIME_VALUE_MAX) {
		xasprintf(cause, "longer than %d bytes", RUNTIME_VALUE_MAX);
		return -1;
	}
	if ((o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err)) == NULL) {
		xasprintf(cause, "not JSON: %s", err.text);
		return -1;
	}
	if (!json_is_object(o) || json_integer_value(json_object_get(o,
	    "v")) != RUNTIME_VERSION)
		xasprintf(cause, "not a version %d certificate", RUNTIME_VERSION);
	else if (json_is_true(json_object_get(o, "deleted"))) {
		cr->cr_id = xstrdup(id);
		cr->cr_deleted = 1;
		rc = 0;
	} else if (runtime_string(json_object_get(o, "issuer"), RUNTIME_STRING_MAX,
	    &issuer) == -1)
		xasprintf(cause, "\"issuer\" is not a name");
	else if (runtime_string(json_object_get(o, "key"), RUNTIME_STRING_MAX,
	    &key) == -1)
		xasprintf(cause, "\"key\" is not a key type");
	else if (json_object_get(o, "profile") != NULL &&
	    runtime_string(json_object_get(o, "profile"), RUNTIME_STRING_MAX,
	    &profile) == -1)
		xasprintf(cause, "\"profile\" is not a name");
	else if (json_object_get(o, "challenge") != NULL &&
	    runtime_string(json_object_get(o, "challenge"), RUNTIME_STRING_MAX,
	    &challenge) == -1)
		xasprintf(cause, "\"challenge\" is not a challenge type");
	else if (runtime_idents(json_object_get(o, "identifiers"), cr,
	    cause) == 0) {
		cr->cr_id = xstrdup(id);
		cr->cr_issuer = xstrdup(issuer);
		cr->cr_key = xstrdup(key);
		cr->cr_profile = profile != NULL ? xstrdup(profile) : NULL;
		cr->cr_challenge = challenge != NULL ? xstrdup(challenge) :
		    NULL;
		rc = 0;
	}
	json_decref(o);
	if (rc == -1)
		cluster_runtime_clear(cr);
	return rc;
}

struct runtime_fetch {
	cluster_runtime_cb	 rf_cb;
	void			*rf_arg;
};

static void
runtime_fetched(const struct redisReply *r, void *arg)
{
	struct runtime_fetch	*rf = arg;
	struct cluster_runtime	*set = NULL, *cr;
	const struct redisReply	*f, *v;
	char			*key, *cause = NULL;
	size_t			 i, n = 0;

	if (cluster_reply_failed(r, "reading the API's certificates") ||
	    r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
		free(rf);
		return;	/* the next reconnect reads it again */
	}
	key = cluster_keyname("runtime", NULL);
	set = xcalloc(r->elements / 2 + 1, sizeof(*set));
	for (i = 0; i + 1 < r->elements; i += 2) {
		f = r->element[i];
		v = r->element[i + 1];
		if (f->type != REDIS_REPLY_STRING ||
		    v->type != REDIS_REPLY_STRING)
			continue;
		cr = &set[n];
		if (cluster_runtime_parse(f->str, v->str, v->len, cr,
		    &cause) == -1) {
			log_warnx("cluster: %s field \"%.64s\": ignored: %s",
			    key, f->str, cause);
			free(cause);
			cause = NULL;
			continue;
		}
		n++;
	}
	rf->rf_cb(set, n, rf->rf_arg);
	for (i = 0; i < n; i++)
		cluster_runtime_clear(&set[i]);
	free(set);
	free(key);
	free(rf);
}

/*
 * cb(set, n): the fleet's API certificates, deleted ones included.  No
 * call when Redis does not answer: the next reconnect reads it again.
 */
void
cluster_runtime_fetch(cluster_runtime_cb cb, void *arg)
{
	struct runtime_fetch	*rf;
	char			*key;

	rf = xcalloc(1, sizeof(*rf));
	rf->rf_cb = cb;
	rf->rf_arg = arg;
	key = cluster_keyname("runtime", NULL);
	if (cluster_command(runtime_fetched, rf, "HGETALL", key, NULL) == NULL)
		free(rf);
	free(key);
}
