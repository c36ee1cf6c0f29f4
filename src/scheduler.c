/*
 * The set of issuers and certificates the daemon keeps.  sched_apply()
 * reconciles it with a configuration, at start and on every reload:
 * unchanged certificates keep their state and timers, new ones start at
 * once, removed ones stop.  Each certificate's own timer (order.c) says
 * when it is next due, so nothing here polls; the only periodic work is
 * a progress line while orders are running.
 */
#include <sys/time.h>

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "sidecar.h"

static struct event_base	 *sched_base;
static struct evdns_base	 *sched_dns;
static struct acme_issuer	**sched_issuers;
static size_t			  sched_nissuers;
static struct cert		**sched_certs;
static size_t			  sched_ncerts;
static size_t			  sched_certs_room;	/* allocated */
static struct event		 *sched_progress_ev;

/*
 * sched_certs by id, for the control API and the fleet's messages: open
 * addressing, at most half full.  A removal only marks it stale (a reload
 * may remove thousands); the next lookup rebuilds it.
 */
static struct cert		**sched_by_id;
static size_t			  sched_by_id_cap;	/* a power of two */
static int			  sched_by_id_stale = 1;

/* The slot holding id, or the free one where it would go. */
static struct cert **
sched_by_id_slot(const char *id)
{
	size_t	 mask = sched_by_id_cap - 1, k;

	k = util_hash(id) & mask;
	while (sched_by_id[k] != NULL &&
	    strcmp(order_cert_id(sched_by_id[k]), id) != 0)
		k = (k + 1) & mask;
	return &sched_by_id[k];
}

static void
sched_by_id_rebuild(void)
{
	size_t	 i;

	free(sched_by_id);
	for (sched_by_id_cap = 64; sched_by_id_cap < (sched_ncerts + 1) * 2;)
		sched_by_id_cap *= 2;
	sched_by_id = xcalloc(sched_by_id_cap, sizeof(*sched_by_id));
	for (i = 0; i < sched_ncerts; i++)
		*sched_by_id_slot(order_cert_id(sched_certs[i])) =
		    sched_certs[i];
	sched_by_id_stale = 0;
}

static void
sched_by_id_add(struct cert *ce)
{
	if (sched_by_id_stale || sched_ncerts * 2 > sched_by_id_cap)
		sched_by_id_stale = 1;
	else
		*sched_by_id_slot(order_cert_id(ce)) = ce;
}

static void
sched_progress(int fd, short ev, void *arg)
{
	size_t	 i, valid = 0, working = 0, waiting = 0;

	(void)fd;
	(void)ev;
	(void)arg;
	for (i = 0; i < sched_ncerts; i++) {
		switch (order_cert_state(sched_certs[i])) {
		case ORDER_IDLE:
			break;
		case ORDER_BACKOFF:
			waiting++;
			break;
		default:
			working++;
			break;
		}
		if (order_cert_valid(sched_certs[i]))
			valid++;
	}
	if (working > 0 || waiting > 0)
		log_info("progress: %zu of %zu certificates valid, %zu orders "
		    "running, %zu backing off", valid, sched_ncerts, working,
		    waiting);
}

void
sched_init(struct event_base *base, struct evdns_base *dns)
{
	struct timeval	 tv = { SCHED_PROGRESS_INTERVAL, 0 };

	sched_base = base;
	sched_dns = dns;
	sched_progress_ev = event_new(base, -1, EV_PERSIST, sched_progress,
	    NULL);
	if (sched_progress_ev == NULL)
		fatalx("%s: event_new", __func__);
	evtimer_add(sched_progress_ev, &tv);
}

struct acme_issuer *
sched_find_issuer(const char *name)
{
	size_t	 i;

	for (i = 0; i < sched_nissuers; i++)
		if (strcmp(acme_issuer_name(sched_issuers[i]), name) == 0)
			return sched_issuers[i];
	return NULL;
}

static void
sched_remove_cert(size_t i)
{
	log_debug("certificate \"%s\": no longer managed",
	    order_cert_id(sched_certs[i]));
	sched_by_id_stale = 1;
	order_cert_free(sched_certs[i]);
	sched_certs[i] = sched_certs[--sched_ncerts];
}

static void
sched_remove_issuer(size_t i)
{
	struct acme_issuer	*ai = sched_issuers[i];
	size_t			 j;

	/* Certificates first: they cancel their requests on the issuer. */
	acme_issuer_close(ai);
	for (j = sched_ncerts; j-- > 0;)
		if (order_cert_issuer(sched_certs[j]) == ai)
			sched_remove_cert(j);
	acme_issuer_free(ai);
	sched_issuers[i] = sched_issuers[--sched_nissuers];
}

/* Drop issuers that are gone or changed in ways a live one cannot take. */
static void
sched_prune_issuers(const struct conf *conf)
{
	struct conf_issuer	*ci;
	size_t			 i;

	for (i = sched_nissuers; i-- > 0;) {
		ci = conf_find_issuer((struct conf *)conf,
		    acme_issuer_name(sched_issuers[i]));
		if (ci != NULL && acme_issuer_same_conf(sched_issuers[i], ci)) {
			acme_issuer_update_conf(sched_issuers[i], ci);
			continue;
		}
		log_info("issuer \"%s\": %s", acme_issuer_name(sched_issuers[i]),
		    ci == NULL ? "removed" : "changed; starting it again");
		sched_remove_issuer(i);
	}
}

static void
sched_add_issuers(const struct conf *conf)
{
	struct conf_issuer	*ci;
	struct acme_issuer	*ai;

	TAILQ_FOREACH(ci, &conf->c_issuers, ci_entry) {
		if (sched_find_issuer(ci->ci_name) != NULL)
			continue;
		if ((ai = acme_issuer_new(sched_base, sched_dns, ci)) == NULL)
			continue;
		sched_issuers = xreallocarray(sched_issuers,
		    sched_nissuers + 1, sizeof(*sched_issuers));
		sched_issuers[sched_nissuers++] = ai;
	}
}

/*
 * sched_apply() matches every certificate against the configuration: with
 * ten thousand of them a scan for each is 10^8 string compares, seconds of
 * a start.  Sorted ids and a binary search make it N log N.
 */
static int
sched_cmp_conf(const void *a, const void *b)
{
	const struct conf_cert *const	*x = a, *const *y = b;

	return strcmp((*x)->cc_id, (*y)->cc_id);
}

static int
sched_find_conf(const void *key, const void *elem)
{
	const struct conf_cert *const	*cc = elem;

	return strcmp(key, (*cc)->cc_id);
}

static int
sched_cmp_id(const void *a, const void *b)
{
	const char *const	*x = a, *const *y = b;

	return strcmp(*x, *y);
}

static int
sched_find_id(const void *key, const void *elem)
{
	const char *const	*id = elem;

	return strcmp(key, *id);
}

/* The configuration's certificates, sorted by id; the caller frees. */
static const struct conf_cert **
sched_conf_index(const struct conf *conf, size_t *n)
{
	const struct conf_cert	**v, *cc;
	size_t			  count = 0;

	TAILQ_FOREACH(cc, &conf->c_certs, cc_entry)
		count++;
	v = xcalloc(count + 1, sizeof(*v));
	*n = 0;
	TAILQ_FOREACH(cc, &conf->c_certs, cc_entry)
		v[(*n)++] = cc;
	if (*n > 0)
		qsort(v, *n, sizeof(*v), sched_cmp_conf);
	return v;
}

/* The ids of the certificates managed now, sorted; the caller frees. */
static const char **
sched_id_index(void)
{
	const char	**v;
	size_t		  i;

	v = xcalloc(sched_ncerts + 1, sizeof(*v));
	for (i = 0; i < sched_ncerts; i++)
		v[i] = order_cert_id(sched_certs[i]);
	qsort(v, sched_ncerts, sizeof(*v), sched_cmp_id);
	return v;
}

/* Start managing cc: its stored certificate, or an order at once. */
struct cert *
sched_add_cert(const struct conf_cert *cc)
{
	struct acme_issuer	*ai;
	struct cert		*ce;

	if ((ai = sched_find_issuer(cc->cc_issuer)) == NULL) {
		log_warnx("certificate \"%s\": issuer \"%s\" is not "
		    "available", cc->cc_id, cc->cc_issuer);
		return NULL;
	}
	ce = order_cert_new(sched_base, ai, cc);
	/* Room doubles: a start adds every certificate, one at a time. */
	if (sched_ncerts == sched_certs_room) {
		sched_certs_room = sched_certs_room == 0 ? 64 :
		    sched_certs_room * 2;
		sched_certs = xreallocarray(sched_certs, sched_certs_room,
		    sizeof(*sched_certs));
	}
	sched_certs[sched_ncerts++] = ce;
	sched_by_id_add(ce);
	order_cert_start(ce);
	return ce;
}

/* Stop managing a certificate: its order stops, it leaves the zone. */
int
sched_drop_cert(const char *id)
{
	size_t	 i;

	for (i = 0; i < sched_ncerts; i++) {
		if (strcmp(order_cert_id(sched_certs[i]), id) == 0) {
			sched_remove_cert(i);
			return 0;
		}
	}
	return -1;
}

void
sched_apply(const struct conf *conf)
{
	const struct conf_cert	**conf_idx, *const *found, *cc;
	const char		**ids;
	struct cert		*ce;
	size_t			 i, nconf, nids;

	sched_prune_issuers(conf);
	sched_add_issuers(conf);

	conf_idx = sched_conf_index(conf, &nconf);
	for (i = sched_ncerts; i-- > 0;) {
		ce = sched_certs[i];
		found = bsearch(order_cert_id(ce), conf_idx, nconf,
		    sizeof(*conf_idx), sched_find_conf);
		cc = found != NULL ? *found : NULL;
		if (cc == NULL || !order_cert_same_conf(ce, cc) ||
		    strcmp(cc->cc_issuer,
		    acme_issuer_name(order_cert_issuer(ce))) != 0)
			sched_remove_cert(i);
	}
	free(conf_idx);
	/* The configuration has no id twice (conf_cert_add()). */
	ids = sched_id_index();
	nids = sched_ncerts;
	store_batch_begin();
	TAILQ_FOREACH(cc, &conf->c_certs, cc_entry) {
		if (bsearch(cc->cc_id, ids, nids, sizeof(*ids),
		    sched_find_id) == NULL)
			sched_add_cert(cc);
	}
	store_batch_end();
	free(ids);
	log_info("managing %zu certificates from %zu issuers", sched_ncerts,
	    sched_nissuers);
}

void
sched_shutdown(void)
{
	while (sched_nissuers > 0)
		sched_remove_issuer(sched_nissuers - 1);
	while (sched_ncerts > 0)
		sched_remove_cert(sched_ncerts - 1);
	free(sched_issuers);
	free(sched_certs);
	free(sched_by_id);
	sched_issuers = NULL;
	sched_certs = NULL;
	sched_by_id = NULL;
	sched_certs_room = 0;
	sched_by_id_stale = 1;
	if (sched_progress_ev != NULL)
		event_free(sched_progress_ev);
	sched_progress_ev = NULL;
}

/*
 * Several replicas: at each (re)connection to Redis every certificate
 * catches up, and a "cert" message brings one.
 */
void
sched_cluster_up(void)
{
	size_t	 i;

	for (i = 0; i < sched_nissuers; i++)
		acme_fleet_up(sched_issuers[i]);
	for (i = 0; i < sched_ncerts; i++)
		order_cluster_sync(sched_certs[i]);
}

void
sched_cluster_cert(const char *id)
{
	struct cert	*ce;

	if ((ce = sched_cert_find(id)) != NULL)
		order_cluster_sync(ce);
}

/* The control API's view: index i of the current set, in no set order. */
size_t
sched_cert_count(void)
{
	return sched_ncerts;
}

struct cert *
sched_cert_at(size_t i)
{
	return i < sched_ncerts ? sched_certs[i] : NULL;
}

struct cert *
sched_cert_find(const char *id)
{
	if (sched_by_id_stale)
		sched_by_id_rebuild();
	return *sched_by_id_slot(id);
}

size_t
sched_issuer_count(void)
{
	return sched_nissuers;
}

struct acme_issuer *
sched_issuer_at(size_t i)
{
	return i < sched_nissuers ? sched_issuers[i] : NULL;
}
