/*
 * The fleet's ACME account, one per issuer, in PREFIX:account:ISSUER:
 * the directory URI, the account URL and the sealed account key
 * (cluster_record.c).  acme.c decides who creates it; this file only
 * reads it, and writes it once (SET NX): an account in Redis is never
 * replaced, since every order of the fleet belongs to it.
 */
#include <sys/queue.h>

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "sidecar.h"

struct cluster_account_op {
	cluster_account_cb	 ca_got;
	cluster_put_cb		 ca_put;
	void			*ca_arg;
	char			*ca_key;	/* PREFIX:account:ISSUER */
};

static struct cluster_account_op *
cluster_account_op_new(const char *issuer, void *arg)
{
	struct cluster_account_op	*op;

	op = xcalloc(1, sizeof(*op));
	op->ca_key = cluster_keyname("account", issuer);
	op->ca_arg = arg;
	return op;
}

static void
cluster_account_op_free(struct cluster_account_op *op)
{
	free(op->ca_key);
	free(op);
}

void
cluster_account_cancel(struct cluster_account_op *op)
{
	if (op == NULL)
		return;
	op->ca_got = NULL;
	op->ca_put = NULL;
}

static void
cluster_account_got(const struct redisReply *r, void *arg)
{
	struct cluster_account_op	*op = arg;
	struct cluster_rec		 rec;
	char				*cause = NULL;
	int				 rc;

	memset(&rec, 0, sizeof(rec));
	if (cluster_reply_failed(r, op->ca_key))
		rc = -1;
	else if (r->type == REDIS_REPLY_NIL)
		rc = 0;
	else if (r->type != REDIS_REPLY_STRING) {
		log_warnx("cluster: %s: ignored: not a string", op->ca_key);
		rc = -1;
	} else if (cluster_rec_account_parse(op->ca_key, r->str, r->len, &rec,
	    &cause) == -1) {
		log_warnx("cluster: %s: ignored: %s", op->ca_key, cause);
		free(cause);
		rc = -1;
	} else
		rc = 1;
	if (op->ca_got != NULL)
		op->ca_got(rc, rc == 1 ? &rec : NULL, op->ca_arg);
	cluster_rec_clear(&rec);
	cluster_account_op_free(op);
}

/*
 * cb(1, account) when Redis holds the issuer's account and it opened,
 * cb(0, NULL) when it holds none, cb(-1, NULL) when Redis did not answer
 * or the value is bad (logged with its key).  NULL when Redis is away.
 */
struct cluster_account_op *
cluster_account_get(const char *issuer, cluster_account_cb cb, void *arg)
{
	struct cluster_account_op	*op;

	op = cluster_account_op_new(issuer, arg);
	op->ca_got = cb;
	if (cluster_command(cluster_account_got, op, "GET", op->ca_key,
	    NULL) == NULL) {
		cluster_account_op_free(op);
		return NULL;
	}
	return op;
}

static void
cluster_account_put_done(const struct redisReply *r, void *arg)
{
	struct cluster_account_op	*op = arg;
	int				 rc;

	if (cluster_reply_failed(r, op->ca_key))
		rc = -1;
	else
		rc = r->type == REDIS_REPLY_STATUS ? 1 : 0; /* nil: one is there */
	if (op->ca_put != NULL)
		op->ca_put(rc, op->ca_arg);
	cluster_account_op_free(op);
}

/* cb(1) written, cb(0) another account is there already, cb(-1) failed. */
struct cluster_account_op *
cluster_account_put(const char *issuer, const char *uri, const char *url,
    EVP_PKEY *key, cluster_put_cb cb, void *arg)
{
	struct cluster_account_op	*op;
	char				*value;

	op = cluster_account_op_new(issuer, arg);
	op->ca_put = cb;
	value = cluster_rec_account_json(op->ca_key, uri, url, key);
	if (value == NULL || cluster_command(cluster_account_put_done, op,
	    "SET", op->ca_key, value, "NX", NULL) == NULL) {
		cluster_account_op_free(op);
		op = NULL;
	}
	free(value);
	return op;
}
