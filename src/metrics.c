/*
 * metrics.c: the counters behind GET /metrics and their rendering in the
 * Prometheus text format 0.0.4 (proto/control-api.md).
 *
 * acme.c counts every exchange with a CA and order.c every order's outcome;
 * the per-certificate gauges, the challenge counter and the shared zone
 * are read from their owners when rendered, so they cannot drift.
 */

#include <sys/types.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sidecar.h"
#include "textbuf.h"

/*
 * Label sets are kept in small arrays searched linearly: there are a few
 * issuers, ten endpoints and a handful of statuses, and a request to a CA
 * costs far more than the search.  The cap, per family, bounds memory if
 * something unexpected (a CA answering with every status there is) floods
 * one; beyond it new label sets are dropped, those known keep counting,
 * and one warning is logged.  4096 is 40 issuers x 10 endpoints x 10
 * statuses.
 */
#define METRICS_MAX_LABELSETS	4096

/*
 * Latency buckets in seconds, from a fast local CA (Pebble answers in a
 * few ms) to the 30 s beyond which http_client gives up.
 */
static const double metrics_buckets[] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
};
static const char *const metrics_bucket_names[] = {
	"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
	"5", "10", "30"
};
#define METRICS_NBUCKETS \
	(sizeof(metrics_buckets) / sizeof(metrics_buckets[0]))

static const char *const metrics_outcome_names[] = {
	"issued", "renewed", "failed", "revoked"
};

struct metrics_request {
	char		*mr_issuer;
	char		*mr_endpoint;
	int		 mr_status;		/* 0: no answer */
	uint64_t	 mr_count;
};

struct metrics_latency {
	char		*ml_issuer;
	char		*ml_endpoint;
	uint64_t	 ml_bucket[METRICS_NBUCKETS];	/* not cumulative */
	uint64_t	 ml_count;
	double		 ml_sum;
};

struct metrics_orders {
	char		*mo_issuer;
	uint64_t	 mo_count[METRICS_OUTCOME_MAX];
};

static struct {
	struct metrics_request	*requests;
	size_t			 nrequests;
	struct metrics_latency	*latencies;
	size_t			 nlatencies;
	struct metrics_orders	*orders;
	size_t			 norders;
	int			 warned;	/* the cap was hit */
} metrics;

static int
metrics_full(size_t n)
{
	if (n < METRICS_MAX_LABELSETS)
		return 0;
	if (!metrics.warned) {
		log_warnx("metrics: more than %d label sets; dropping new ones",
		    METRICS_MAX_LABELSETS);
		metrics.warned = 1;
	}
	return 1;
}

static struct metrics_request *
metrics_find_request(const char *issuer, const char *endpoint, int status)
{
	struct metrics_request	*mr;
	size_t			 i;

	for (i = 0; i < metrics.nrequests; i++) {
		mr = &metrics.requests[i];
		if (mr->mr_status == status &&
		    strcmp(mr->mr_endpoint, endpoint) == 0 &&
		    strcmp(mr->mr_issuer, issuer) == 0)
			return mr;
	}
	if (metrics_full(metrics.nrequests))
		return NULL;
	metrics.requests = xreallocarray(metrics.requests,
	    metrics.nrequests + 1, sizeof(*metrics.requests));
	mr = &metrics.requests[metrics.nrequests++];
	mr->mr_issuer = xstrdup(issuer);
	mr->mr_endpoint = xstrdup(endpoint);
	mr->mr_status = status;
	mr->mr_count = 0;
	return mr;
}

static struct metrics_latency *
metrics_find_latency(const char *issuer, const char *endpoint)
{
	struct metrics_latency	*ml;
	size_t			 i;

	for (i = 0; i < metrics.nlatencies; i++) {
		ml = &metrics.latencies[i];
		if (strcmp(ml->ml_endpoint, endpoint) == 0 &&
		    strcmp(ml->ml_issuer, issuer) == 0)
			return ml;
	}
	if (metrics_full(metrics.nlatencies))
		return NULL;
	metrics.latencies = xreallocarray(metrics.latencies,
	    metrics.nlatencies + 1, sizeof(*metrics.latencies));
	ml = &metrics.latencies[metrics.nlatencies++];
	memset(ml, 0, sizeof(*ml));
	ml->ml_issuer = xstrdup(issuer);
	ml->ml_endpoint = xstrdup(endpoint);
	return ml;
}

static struct metrics_orders *
metrics_find_orders(const char *issuer)
{
	struct metrics_orders	*mo;
	size_t			 i;

	for (i = 0; i < metrics.norders; i++) {
		mo = &metrics.orders[i];
		if (strcmp(mo->mo_issuer, issuer) == 0)
			return mo;
	}
	if (metrics_full(metrics.norders))
		return NULL;
	metrics.orders = xreallocarray(metrics.orders, metrics.norders + 1,
	    sizeof(*metrics.orders));
	mo = &metrics.orders[metrics.norders++];
	memset(mo, 0, sizeof(*mo));
	mo->mo_issuer = xstrdup(issuer);
	return mo;
}

/* One exchange with a CA; status is the HTTP status or 0 without one. */
void
metrics_acme_request(const char *issuer, const char *endpoint, int status,
    double seconds)
{
	struct metrics_request	*mr;
	struct metrics_latency	*ml;
	size_t			 i;

	if (status < 0)
		status = 0;
	if (seconds < 0)
		seconds = 0;	/* the clock is monotonic; be safe anyway */
	if ((mr = metrics_find_request(issuer, endpoint, status)) != NULL)
		mr->mr_count++;
	if ((ml = metrics_find_latency(issuer, endpoint)) == NULL)
		return;
	for (i = 0; i < METRICS_NBUCKETS; i++) {
		if (seconds <= metrics_buckets[i]) {
			ml->ml_bucket[i]++;
			break;
		}
	}
	ml->ml_count++;
	ml->ml_sum += seconds;
}

void
metrics_order_outcome(const char *issuer, enum metrics_outcome outcome)
{
	struct metrics_orders	*mo;

	if ((int)outcome < 0 || outcome >= METRICS_OUTCOME_MAX)
		fatalx("%s: bad outcome %d", __func__, (int)outcome);
	if ((mo = metrics_find_orders(issuer)) != NULL)
		mo->mo_count[outcome]++;
}

void
metrics_reset(void)
{
	size_t	 i;

	for (i = 0; i < metrics.nrequests; i++) {
		free(metrics.requests[i].mr_issuer);
		free(metrics.requests[i].mr_endpoint);
	}
	for (i = 0; i < metrics.nlatencies; i++) {
		free(metrics.latencies[i].ml_issuer);
		free(metrics.latencies[i].ml_endpoint);
	}
	for (i = 0; i < metrics.norders; i++)
		free(metrics.orders[i].mo_issuer);
	free(metrics.requests);
	free(metrics.latencies);
	free(metrics.orders);
	memset(&metrics, 0, sizeof(metrics));
}

/* A label value: the format escapes backslash, double quote and newline. */
static void
metrics_label(struct textbuf *mb, const char *name, const char *value,
    int first)
{
	const char	*p;
	char		*out;

	/* Worst case every byte doubles, plus name, quotes and comma. */
	textbuf_reserve(mb, strlen(name) + 2 * strlen(value) + 4);
	out = mb->tb_buf + mb->tb_len;
	if (!first)
		*out++ = ',';
	out = stpcpy(out, name);
	*out++ = '=';
	*out++ = '"';
	for (p = value; *p != '\0'; p++) {
		switch (*p) {
		case '\\':
			*out++ = '\\';
			*out++ = '\\';
			break;
		case '"':
			*out++ = '\\';
			*out++ = '"';
			break;
		case '\n':
			*out++ = '\\';
			*out++ = 'n';
			break;
		default:
			*out++ = *p;
			break;
		}
	}
	*out++ = '"';
	*out = '\0';
	mb->tb_len = out - mb->tb_buf;
}

static void
metrics_family(struct textbuf *mb, const char *name, const char *type,
    const char *help)
{
	textbuf_printf(mb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type);
}

static void
metrics_render_requests(struct textbuf *mb)
{
	struct metrics_request	*mr;
	size_t			 i;

	metrics_family(mb, "acme_sidecar_acme_requests_total", "counter",
	    "Requests to the CA by answer.");
	for (i = 0; i < metrics.nrequests; i++) {
		mr = &metrics.requests[i];
		textbuf_puts(mb, "acme_sidecar_acme_requests_total{");
		metrics_label(mb, "issuer", mr->mr_issuer, 1);
		metrics_label(mb, "endpoint", mr->mr_endpoint, 0);
		if (mr->mr_status == 0)
			textbuf_puts(mb, ",status=\"error\"");
		else
			textbuf_printf(mb, ",status=\"%d\"", mr->mr_status);
		textbuf_printf(mb, "} %llu\n",
		    (unsigned long long)mr->mr_count);
	}
}

static void
metrics_render_latency(struct textbuf *mb, struct metrics_latency *ml)
{
	const char	*name = "acme_sidecar_acme_request_duration_seconds";
	uint64_t	 cumulative = 0;
	size_t		 i;

	for (i = 0; i < METRICS_NBUCKETS; i++) {
		cumulative += ml->ml_bucket[i];
		textbuf_printf(mb, "%s_bucket{", name);
		metrics_label(mb, "issuer", ml->ml_issuer, 1);
		metrics_label(mb, "endpoint", ml->ml_endpoint, 0);
		textbuf_printf(mb, ",le=\"%s\"} %llu\n",
		    metrics_bucket_names[i], (unsigned long long)cumulative);
	}
	textbuf_printf(mb, "%s_bucket{", name);
	metrics_label(mb, "issuer", ml->ml_issuer, 1);
	metrics_label(mb, "endpoint", ml->ml_endpoint, 0);
	textbuf_printf(mb, ",le=\"+Inf\"} %llu\n",
	    (unsigned long long)ml->ml_count);

	textbuf_printf(mb, "%s_sum{", name);
	metrics_label(mb, "issuer", ml->ml_issuer, 1);
	metrics_label(mb, "endpoint", ml->ml_endpoint, 0);
	textbuf_printf(mb, "} %.6f\n", ml->ml_sum);

	textbuf_printf(mb, "%s_count{", name);
	metrics_label(mb, "issuer", ml->ml_issuer, 1);
	metrics_label(mb, "endpoint", ml->ml_endpoint, 0);
	textbuf_printf(mb, "} %llu\n", (unsigned long long)ml->ml_count);
}

static void
metrics_render_orders(struct textbuf *mb)
{
	struct metrics_orders	*mo;
	size_t			 i;
	int			 o;

	metrics_family(mb, "acme_sidecar_orders_total", "counter",
	    "Orders by outcome: issued, renewed, failed, revoked.");
	for (i = 0; i < metrics.norders; i++) {
		mo = &metrics.orders[i];
		for (o = 0; o < METRICS_OUTCOME_MAX; o++) {
			textbuf_puts(mb, "acme_sidecar_orders_total{");
			metrics_label(mb, "issuer", mo->mo_issuer, 1);
			textbuf_printf(mb, ",outcome=\"%s\"} %llu\n",
			    metrics_outcome_names[o],
			    (unsigned long long)mo->mo_count[o]);
		}
	}
}

/* One sample of a per-certificate gauge, labelled by id and issuer. */
static void
metrics_cert_sample(struct textbuf *mb, const char *name,
    const struct order_info *oi, long long value)
{
	textbuf_puts(mb, name);
	textbuf_puts(mb, "{");
	metrics_label(mb, "id", oi->oi_id, 1);
	metrics_label(mb, "issuer", oi->oi_issuer != NULL ? oi->oi_issuer : "",
	    0);
	textbuf_printf(mb, "} %lld\n", value);
}

/* When the next order starts: absent while one runs or none is planned. */
static time_t
metrics_next_order(const struct order_info *oi)
{
	if (oi->oi_state == ORDER_IDLE)
		return oi->oi_renew_at;
	if (oi->oi_state == ORDER_BACKOFF)
		return oi->oi_retry_at;
	return 0;
}

/*
 * The per-certificate gauges.  A family's samples must be together, so the
 * snapshot's certificates are walked once per family.
 */
static void
metrics_render_certs(struct textbuf *mb, const struct metrics_snapshot *ms)
{
	const struct order_info	*oi = ms->ms_certs;
	size_t			 i, n = ms->ms_ncerts;
	time_t			 next;

	metrics_family(mb, "acme_sidecar_certificate_ready", "gauge",
	    "1 while an unexpired certificate is held.");
	for (i = 0; i < n; i++) {
		metrics_cert_sample(mb, "acme_sidecar_certificate_ready",
		    &oi[i], ms->ms_valid[i] ? 1 : 0);
	}

	metrics_family(mb, "acme_sidecar_certificate_expiry_timestamp_seconds",
	    "gauge", "notAfter of the certificate held.");
	for (i = 0; i < n; i++) {
		if (!oi[i].oi_have || oi[i].oi_not_after == 0)
			continue;
		metrics_cert_sample(mb,
		    "acme_sidecar_certificate_expiry_timestamp_seconds",
		    &oi[i], (long long)oi[i].oi_not_after);
	}

	metrics_family(mb,
	    "acme_sidecar_certificate_next_renewal_timestamp_seconds", "gauge",
	    "When the next order starts (renewal, or retry after a failure).");
	for (i = 0; i < n; i++) {
		if ((next = metrics_next_order(&oi[i])) == 0)
			continue;
		metrics_cert_sample(mb,
		    "acme_sidecar_certificate_next_renewal_timestamp_seconds",
		    &oi[i], (long long)next);
	}

	metrics_family(mb, "acme_sidecar_certificate_renewal_source", "gauge",
	    "1 for where the next renewal time comes from: ari (the CA's "
	    "renewalInfo window) or lifetime.");
	for (i = 0; i < n; i++) {
		if (oi[i].oi_renew_at == 0)
			continue;
		textbuf_puts(mb, "acme_sidecar_certificate_renewal_source{");
		metrics_label(mb, "id", oi[i].oi_id, 1);
		metrics_label(mb, "issuer", oi[i].oi_issuer != NULL ?
		    oi[i].oi_issuer : "", 0);
		metrics_label(mb, "source", oi[i].oi_renew_ari ? "ari" :
		    "lifetime", 0);
		textbuf_puts(mb, "} 1\n");
	}

	metrics_family(mb,
	    "acme_sidecar_certificate_ari_window_start_timestamp_seconds",
	    "gauge", "Start of the renewal window the CA suggests (ARI).");
	for (i = 0; i < n; i++) {
		if (oi[i].oi_ari_end == 0)
			continue;
		metrics_cert_sample(mb,
		    "acme_sidecar_certificate_ari_window_start_timestamp_seconds",
		    &oi[i], (long long)oi[i].oi_ari_start);
	}
	metrics_family(mb,
	    "acme_sidecar_certificate_ari_window_end_timestamp_seconds",
	    "gauge", "End of the renewal window the CA suggests (ARI).");
	for (i = 0; i < n; i++) {
		if (oi[i].oi_ari_end == 0)
			continue;
		metrics_cert_sample(mb,
		    "acme_sidecar_certificate_ari_window_end_timestamp_seconds",
		    &oi[i], (long long)oi[i].oi_ari_end);
	}
	metrics_family(mb,
	    "acme_sidecar_certificate_ari_next_fetch_timestamp_seconds",
	    "gauge", "When renewalInfo is asked next (the CA's Retry-After).");
	for (i = 0; i < n; i++) {
		if (oi[i].oi_ari_next_fetch == 0)
			continue;
		metrics_cert_sample(mb,
		    "acme_sidecar_certificate_ari_next_fetch_timestamp_seconds",
		    &oi[i], (long long)oi[i].oi_ari_next_fetch);
	}

	metrics_family(mb, "acme_sidecar_certificate_failures", "gauge",
	    "Failed orders since the last success.");
	for (i = 0; i < n; i++) {
		metrics_cert_sample(mb, "acme_sidecar_certificate_failures",
		    &oi[i], oi[i].oi_failures);
	}
}

/*
 * What publishing costs.  A publish writes what changed since that slot's
 * last image; a repack lays a slot out afresh (it was fragmented, or the
 * set of certificates or their names changed).
 */
static void
metrics_render_shm_cost(struct textbuf *mb, const struct shm_stats *st)
{
	metrics_family(mb, "acme_sidecar_shared_zone_publishes_total",
	    "counter", "Images published.");
	textbuf_printf(mb, "acme_sidecar_shared_zone_publishes_total %llu\n",
	    (unsigned long long)st->ss_publishes);
	metrics_family(mb,
	    "acme_sidecar_shared_zone_certificate_writes_total", "counter",
	    "Images in which a certificate changed, not only tokens.");
	textbuf_printf(mb,
	    "acme_sidecar_shared_zone_certificate_writes_total %llu\n",
	    (unsigned long long)st->ss_cert_writes);
	metrics_family(mb, "acme_sidecar_shared_zone_written_bytes_total",
	    "counter", "Bytes publishes wrote into the zone, wipes included.");
	textbuf_printf(mb,
	    "acme_sidecar_shared_zone_written_bytes_total %llu\n",
	    (unsigned long long)st->ss_bytes_written);
	metrics_family(mb, "acme_sidecar_shared_zone_publish_cpu_seconds_total",
	    "counter", "CPU time the daemon spent publishing images.");
	textbuf_printf(mb,
	    "acme_sidecar_shared_zone_publish_cpu_seconds_total %.6f\n",
	    (double)st->ss_publish_ns / 1e9);
}

static void
metrics_render_shm(struct textbuf *mb, const struct shm_stats *st)
{
	metrics_family(mb, "acme_sidecar_shared_zone_full", "gauge",
	    "1 while the latest image does not fit.");
	textbuf_printf(mb, "acme_sidecar_shared_zone_full %d\n",
	    st->ss_full ? 1 : 0);
	metrics_family(mb, "acme_sidecar_shared_zone_used_bytes", "gauge",
	    "Bytes of the zone in use: both images, every block.");
	textbuf_printf(mb, "acme_sidecar_shared_zone_used_bytes %llu\n",
	    (unsigned long long)st->ss_zone_used);
	metrics_family(mb, "acme_sidecar_shared_zone_image_size_bytes",
	    "gauge", "Bytes the last image published uses, blocks included.");
	textbuf_printf(mb, "acme_sidecar_shared_zone_image_size_bytes %llu\n",
	    (unsigned long long)st->ss_image_bytes);
	metrics_family(mb, "acme_sidecar_shared_zone_failed_publishes_total",
	    "counter", "Images that did not fit.");
	textbuf_printf(mb,
	    "acme_sidecar_shared_zone_failed_publishes_total %llu\n",
	    (unsigned long long)st->ss_failures);
	metrics_render_shm_cost(mb, st);
}

/* The readiness checks before validation (ready.c). */
static void
metrics_render_ready(struct textbuf *mb, const struct ready_stats *st)
{
	metrics_family(mb, "acme_sidecar_readiness_checks_total", "counter",
	    "Readiness checks before validation: passed, or failed (the "
	    "order failed without asking the CA).");
	textbuf_printf(mb, "acme_sidecar_readiness_checks_total{result="
	    "\"passed\"} %llu\n", st->rs_passed);
	textbuf_printf(mb, "acme_sidecar_readiness_checks_total{result="
	    "\"failed\"} %llu\n", st->rs_gave_up);
	metrics_family(mb, "acme_sidecar_readiness_failed_tries_total",
	    "counter", "Readiness tries that did not find the answer (each "
	    "is tried again for up to 30 s).");
	textbuf_printf(mb, "acme_sidecar_readiness_failed_tries_total %llu\n",
	    st->rs_failed_tries);
}

/* Only with "cluster": the link to Redis, its members, our leases. */
static void
metrics_render_cluster(struct textbuf *mb, const struct cluster_status *cs)
{
	if (!cs->cs_enabled)
		return;
	metrics_family(mb, "acme_sidecar_cluster_connected", "gauge",
	    "1 while the link to Redis is up.");
	textbuf_printf(mb, "acme_sidecar_cluster_connected %d\n",
	    cs->cs_connected ? 1 : 0);
	metrics_family(mb, "acme_sidecar_cluster_members", "gauge",
	    "Live replicas, this one included, as of the last heartbeat.");
	textbuf_printf(mb, "acme_sidecar_cluster_members %zu\n",
	    cs->cs_nmembers);
	metrics_family(mb, "acme_sidecar_cluster_leases", "gauge",
	    "Certificate leases this replica holds.");
	textbuf_printf(mb, "acme_sidecar_cluster_leases %zu\n", cs->cs_leases);
	metrics_family(mb, "acme_sidecar_cluster_secret_ok", "gauge",
	    "1 when secret_file opens the fleet's values, 0 when not, -1 "
	    "not checked yet.");
	textbuf_printf(mb, "acme_sidecar_cluster_secret_ok %d\n",
	    cs->cs_secret_ok);
	metrics_family(mb, "acme_sidecar_cluster_connects_total", "counter",
	    "Times the link to Redis came up.");
	textbuf_printf(mb, "acme_sidecar_cluster_connects_total %llu\n",
	    (unsigned long long)cs->cs_connects);
	metrics_family(mb, "acme_sidecar_cluster_drops_total", "counter",
	    "Times the link to Redis dropped.");
	textbuf_printf(mb, "acme_sidecar_cluster_drops_total %llu\n",
	    (unsigned long long)cs->cs_drops);
}

/*
 * When this process started, from the kernel: /proc/self/stat's field 22
 * is the start in clock ticks after boot, /proc/stat's btime the boot.
 * This needs no init call from main.c and does not move if the first
 * scrape comes late.  Without /proc, the first render stands in.
 */
static time_t
metrics_proc_start(void)
{
	FILE			*f = NULL;
	char			 line[1024], *p;
	unsigned long long	 ticks = 0, btime = 0;
	long			 hz;
	int			 field;
	time_t			 t = -1;

	if ((f = fopen("/proc/self/stat", "r")) == NULL)
		goto out;
	if (fgets(line, sizeof(line), f) == NULL)
		goto out;
	fclose(f);
	f = NULL;
	/* The command name may hold spaces; the fields after it do not. */
	if ((p = strrchr(line, ')')) == NULL)
		goto out;
	for (field = 2; field < 22 && p != NULL; field++)
		p = strchr(p + 1, ' ');
	if (p == NULL || sscanf(p, " %llu", &ticks) != 1)
		goto out;

	if ((f = fopen("/proc/stat", "r")) == NULL)
		goto out;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "btime %llu", &btime) == 1)
			break;
	}
	if (btime == 0 || (hz = sysconf(_SC_CLK_TCK)) <= 0)
		goto out;
	t = (time_t)(btime + ticks / hz);
out:
	if (f != NULL)
		fclose(f);
	return t;
}

static time_t
metrics_start_time(void)
{
	static time_t	 start = -1;

	if (start == -1 && (start = metrics_proc_start()) == -1)
		start = util_now();
	return start;
}

/*
 * The whole exposition, Prometheus text format 0.0.4, of our counters and
 * what ms holds; caller frees.
 */
char *
metrics_render(const struct metrics_snapshot *ms)
{
	struct textbuf		 mb = { NULL, 0, 0 };
	size_t			 i;

	textbuf_reserve(&mb, 0);

	metrics_render_certs(&mb, ms);
	metrics_render_requests(&mb);
	metrics_family(&mb, "acme_sidecar_acme_request_duration_seconds",
	    "histogram", "Time from sending a request to the CA to its answer.");
	for (i = 0; i < metrics.nlatencies; i++)
		metrics_render_latency(&mb, &metrics.latencies[i]);
	metrics_render_orders(&mb);

	metrics_family(&mb, "acme_sidecar_challenges_served_total", "counter",
	    "Key authorizations the daemon served.");
	textbuf_printf(&mb, "acme_sidecar_challenges_served_total %lu\n",
	    ms->ms_challenges_served);
	metrics_render_ready(&mb, &ms->ms_ready);
	metrics_render_shm(&mb, &ms->ms_shm);
	metrics_render_cluster(&mb, &ms->ms_cluster);
	metrics_family(&mb, "acme_sidecar_start_time_seconds", "gauge",
	    "When the daemon started, in Unix seconds.");
	textbuf_printf(&mb, "acme_sidecar_start_time_seconds %lld\n",
	    (long long)metrics_start_time());
	return mb.tb_buf;
}
