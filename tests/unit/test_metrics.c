/*
 * GET /metrics: the counters, the histogram and the text format they are
 * rendered in (Prometheus 0.0.4), and what a snapshot of certificates,
 * zone, readiness checks and cluster link renders as.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sidecar.h"

#define HIST	"acme_sidecar_acme_request_duration_seconds"

/* metrics.c's METRICS_MAX_LABELSETS: the documented cap per family. */
#define MAX_LABELSETS	4096

static int
setup(void **state)
{
	(void)state;
	metrics_reset();
	return 0;
}

/* The value of the sample whose name and labels are exactly series. */
static int
sample(const char *text, const char *series, double *value)
{
	const char	*p = text;
	size_t		 len = strlen(series);

	while ((p = strstr(p, series)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[len] == ' ')
			return sscanf(p + len + 1, "%lf", value) == 1 ? 0 : -1;
		p += len;
	}
	return -1;
}

static double
sample_value(const char *text, const char *series)
{
	double	 v = -1;

	if (sample(text, series, &v) == -1)
		fail_msg("no sample %s in:\n%s", series, text);
	return v;
}

/* metrics_render() of nothing but metrics.c's own counters. */
static char *
render(void)
{
	struct metrics_snapshot	 ms;

	memset(&ms, 0, sizeof(ms));
	return metrics_render(&ms);
}

static int
count_lines(const char *text, const char *prefix)
{
	const char	*p;
	int		 n = 0;

	for (p = text; *p != '\0'; p = strchr(p, '\n') + 1) {
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			n++;
		if (strchr(p, '\n') == NULL)
			break;
	}
	return n;
}

static void
test_requests_by_labels(void **state)
{
	char	*text;

	(void)state;
	metrics_acme_request("le", "newOrder", 201, 0.02);
	metrics_acme_request("le", "newOrder", 201, 0.03);
	metrics_acme_request("le", "newOrder", 0, 0.5);
	metrics_acme_request("le", "newNonce", 200, 0.001);
	metrics_acme_request("staging", "directory", 200, 0.001);
	text = render();

	assert_true(sample_value(text, "acme_sidecar_acme_requests_total"
	    "{issuer=\"le\",endpoint=\"newOrder\",status=\"201\"}") == 2);
	assert_true(sample_value(text, "acme_sidecar_acme_requests_total"
	    "{issuer=\"le\",endpoint=\"newOrder\",status=\"error\"}") == 1);
	assert_true(sample_value(text, "acme_sidecar_acme_requests_total"
	    "{issuer=\"le\",endpoint=\"newNonce\",status=\"200\"}") == 1);
	assert_true(sample_value(text, "acme_sidecar_acme_requests_total"
	    "{issuer=\"staging\",endpoint=\"directory\",status=\"200\"}") == 1);
	assert_null(strstr(text, "status=\"0\""));
	assert_int_equal(count_lines(text,
	    "acme_sidecar_acme_requests_total{"), 4);
	/* One histogram per (issuer, endpoint), whatever the status. */
	assert_true(sample_value(text, HIST "_count"
	    "{issuer=\"le\",endpoint=\"newOrder\"}") == 3);
	assert_int_equal(count_lines(text, HIST "_count{"), 3);
	free(text);
}

static void
test_histogram_cumulative(void **state)
{
	static const double	 seen[] = { 0.001, 0.007, 0.3, 30, 31 };
	const char		*p, *line;
	char			*text;
	double			 v, last = -1, sum;
	size_t			 i;
	int			 buckets = 0;

	(void)state;
	for (i = 0; i < sizeof(seen) / sizeof(seen[0]); i++)
		metrics_acme_request("le", "order", 200, seen[i]);
	text = render();

#define B(le) HIST "_bucket{issuer=\"le\",endpoint=\"order\",le=\"" le "\"}"
	assert_true(sample_value(text, B("0.005")) == 1);
	assert_true(sample_value(text, B("0.01")) == 2);
	assert_true(sample_value(text, B("0.25")) == 2);
	assert_true(sample_value(text, B("0.5")) == 3);
	assert_true(sample_value(text, B("10")) == 3);
	assert_true(sample_value(text, B("30")) == 4);	/* le is inclusive */
	assert_true(sample_value(text, B("+Inf")) == 5);
#undef B

	/* Every bucket, in order, never decreases and ends at _count. */
	for (p = text; (p = strstr(p, HIST "_bucket{")) != NULL; p++) {
		line = strchr(p, '}');
		assert_non_null(line);
		assert_int_equal(sscanf(line + 1, " %lf", &v), 1);
		assert_true(v >= last);
		last = v;
		buckets++;
	}
	assert_int_equal(buckets, 13);	/* 12 bounds and +Inf */
	assert_true(sample_value(text,
	    HIST "_count{issuer=\"le\",endpoint=\"order\"}") == last);
	sum = sample_value(text, HIST "_sum{issuer=\"le\",endpoint=\"order\"}");
	assert_true(sum > 61.3079 && sum < 61.3081);
	free(text);
}

static void
test_label_escaping(void **state)
{
	const char	*p;
	char		*text;

	(void)state;
	metrics_acme_request("a\"b\\c\nd", "authz", 200, 0.1);
	metrics_order_outcome("x\ny", METRICS_FAILED);
	text = render();
	assert_true(sample_value(text, "acme_sidecar_acme_requests_total"
	    "{issuer=\"a\\\"b\\\\c\\nd\",endpoint=\"authz\",status=\"200\"}")
	    == 1);
	assert_true(sample_value(text, "acme_sidecar_orders_total"
	    "{issuer=\"x\\ny\",outcome=\"failed\"}") == 1);
	/* No raw newline got in: every line is a comment or a sample. */
	for (p = text; *p != '\0'; p = strchr(p, '\n') + 1) {
		if (strncmp(p, "# ", 2) != 0 &&
		    strncmp(p, "acme_sidecar_", 13) != 0)
			fail_msg("stray line: %.40s", p);
	}
	free(text);
}

static void
test_orders(void **state)
{
	char	*text;

	(void)state;
	metrics_order_outcome("le", METRICS_ISSUED);
	metrics_order_outcome("le", METRICS_ISSUED);
	metrics_order_outcome("le", METRICS_RENEWED);
	metrics_order_outcome("le", METRICS_REVOKED);
	metrics_order_outcome("zerossl", METRICS_FAILED);
	text = render();
#define O(i, o) "acme_sidecar_orders_total{issuer=\"" i "\",outcome=\"" o "\"}"
	assert_true(sample_value(text, O("le", "issued")) == 2);
	assert_true(sample_value(text, O("le", "renewed")) == 1);
	assert_true(sample_value(text, O("le", "failed")) == 0);
	assert_true(sample_value(text, O("le", "revoked")) == 1);
	assert_true(sample_value(text, O("zerossl", "failed")) == 1);
	assert_true(sample_value(text, O("zerossl", "issued")) == 0);
#undef O
	free(text);
}

static void
test_reset_clears(void **state)
{
	char	*text;

	(void)state;
	metrics_acme_request("le", "finalize", 200, 1.5);
	metrics_order_outcome("le", METRICS_ISSUED);
	metrics_reset();
	text = render();
	assert_int_equal(count_lines(text,
	    "acme_sidecar_acme_requests_total{"), 0);
	assert_int_equal(count_lines(text, HIST "_"), 0);
	assert_int_equal(count_lines(text, "acme_sidecar_orders_total{"), 0);
	/* The families are still described. */
	assert_non_null(strstr(text,
	    "# TYPE acme_sidecar_acme_requests_total counter\n"));
	assert_non_null(strstr(text, "# TYPE " HIST " histogram\n"));
	free(text);

	/* And counting starts again from zero. */
	metrics_acme_request("le", "finalize", 200, 1.5);
	text = render();
	assert_true(sample_value(text, "acme_sidecar_acme_requests_total"
	    "{issuer=\"le\",endpoint=\"finalize\",status=\"200\"}") == 1);
	free(text);
}

static void
test_no_certificates(void **state)
{
	char	*text;
	double	 start;

	(void)state;
	text = render();
	assert_int_equal(count_lines(text, "acme_sidecar_certificate_"), 0);
	assert_non_null(strstr(text,
	    "# TYPE acme_sidecar_certificate_ready gauge\n"));
	assert_true(sample_value(text,
	    "acme_sidecar_challenges_served_total") == 0);
	assert_true(sample_value(text, "acme_sidecar_shared_zone_full") == 0);
	assert_true(sample_value(text,
	    "acme_sidecar_shared_zone_failed_publishes_total") == 0);
	start = sample_value(text, "acme_sidecar_start_time_seconds");
	assert_true(start > 1000000000 && start <= (double)util_now());
	free(text);
}

#define CERT(name, id, issuer) \
	"acme_sidecar_certificate_" name "{id=\"" id "\",issuer=\"" issuer "\"}"

/*
 * Three certificates: one held and idle (renewal from an ARI window), one
 * backing off after failures with none held yet, one whose order runs.
 * Each gauge has a sample for exactly those it applies to.
 */
static void
test_certificates(void **state)
{
	struct order_info	 oi[3];
	int			 valid[3] = { 1, 0, 1 };
	struct metrics_snapshot	 ms;
	char			*text;

	(void)state;
	memset(oi, 0, sizeof(oi));
	oi[0] = (struct order_info){ .oi_id = "a.test", .oi_issuer = "le",
	    .oi_state = ORDER_IDLE, .oi_have = 1, .oi_not_after = 2000000000,
	    .oi_renew_at = 1990000000, .oi_renew_ari = 1,
	    .oi_ari_start = 1980000000, .oi_ari_end = 1995000000,
	    .oi_ari_next_fetch = 1970000000 };
	oi[1] = (struct order_info){ .oi_id = "b.test", .oi_issuer = "le",
	    .oi_state = ORDER_BACKOFF, .oi_retry_at = 1960000000,
	    .oi_failures = 3 };
	oi[2] = (struct order_info){ .oi_id = "c\"q.test", .oi_issuer = "zs",
	    .oi_state = ORDER_CHALLENGE, .oi_have = 1,
	    .oi_not_after = 2100000000, .oi_renew_at = 2090000000 };
	memset(&ms, 0, sizeof(ms));
	ms.ms_certs = oi;
	ms.ms_valid = valid;
	ms.ms_ncerts = 3;
	ms.ms_challenges_served = 7;
	ms.ms_ready.rs_passed = 5;
	ms.ms_ready.rs_gave_up = 1;
	ms.ms_shm.ss_full = 1;
	ms.ms_shm.ss_zone_used = 4096;
	ms.ms_shm.ss_publishes = 9;
	ms.ms_shm.ss_cert_writes = 4;
	ms.ms_cluster.cs_enabled = 1;
	ms.ms_cluster.cs_nmembers = 3;
	text = metrics_render(&ms);

	assert_true(sample_value(text, CERT("ready", "a.test", "le")) == 1);
	assert_true(sample_value(text, CERT("ready", "b.test", "le")) == 0);
	assert_true(sample_value(text,
	    CERT("ready", "c\\\"q.test", "zs")) == 1);
	assert_int_equal(count_lines(text, "acme_sidecar_certificate_ready{"),
	    3);
	/* Expiry: only where one is held. */
	assert_true(sample_value(text, CERT("expiry_timestamp_seconds",
	    "a.test", "le")) == 2000000000);
	assert_int_equal(count_lines(text,
	    "acme_sidecar_certificate_expiry_timestamp_seconds{"), 2);
	/* The next order: idle's renewal, backoff's retry, none while one runs. */
	assert_true(sample_value(text, CERT("next_renewal_timestamp_seconds",
	    "a.test", "le")) == 1990000000);
	assert_true(sample_value(text, CERT("next_renewal_timestamp_seconds",
	    "b.test", "le")) == 1960000000);
	assert_int_equal(count_lines(text,
	    "acme_sidecar_certificate_next_renewal_timestamp_seconds{"), 2);
	assert_true(sample_value(text, "acme_sidecar_certificate_renewal_source"
	    "{id=\"a.test\",issuer=\"le\",source=\"ari\"}") == 1);
	assert_true(sample_value(text, "acme_sidecar_certificate_renewal_source"
	    "{id=\"c\\\"q.test\",issuer=\"zs\",source=\"lifetime\"}") == 1);
	/* The ARI window: only a.test has one. */
	assert_true(sample_value(text, CERT(
	    "ari_window_start_timestamp_seconds", "a.test", "le")) ==
	    1980000000);
	assert_true(sample_value(text, CERT(
	    "ari_window_end_timestamp_seconds", "a.test", "le")) == 1995000000);
	assert_true(sample_value(text, CERT(
	    "ari_next_fetch_timestamp_seconds", "a.test", "le")) == 1970000000);
	assert_int_equal(count_lines(text,
	    "acme_sidecar_certificate_ari_window_end_timestamp_seconds{"), 1);
	assert_true(sample_value(text, CERT("failures", "b.test", "le")) == 3);
	assert_int_equal(count_lines(text,
	    "acme_sidecar_certificate_failures{"), 3);

	/* What the snapshot says of the rest. */
	assert_true(sample_value(text,
	    "acme_sidecar_challenges_served_total") == 7);
	assert_true(sample_value(text, "acme_sidecar_readiness_checks_total"
	    "{result=\"passed\"}") == 5);
	assert_true(sample_value(text, "acme_sidecar_shared_zone_full") == 1);
	assert_true(sample_value(text,
	    "acme_sidecar_shared_zone_used_bytes") == 4096);
	assert_true(sample_value(text,
	    "acme_sidecar_shared_zone_publishes_total") == 9);
	assert_true(sample_value(text,
	    "acme_sidecar_shared_zone_certificate_writes_total") == 4);
	/* Slots are no longer laid out afresh: nothing to count. */
	assert_null(strstr(text, "shared_zone_repacks"));
	assert_true(sample_value(text, "acme_sidecar_cluster_members") == 3);
	free(text);
}

/*
 * The format wants a family's samples together, after its TYPE line, and
 * each family described once.
 */
static void
test_families_grouped(void **state)
{
	const char	*p, *end;
	char		*text, family[128], type[160];
	size_t		 len;

	(void)state;
	metrics_acme_request("b", "order", 200, 0.1);
	metrics_acme_request("a", "order", 500, 0.1);
	metrics_order_outcome("a", METRICS_ISSUED);
	text = render();
	family[0] = '\0';
	for (p = text; *p != '\0'; p = end + 1) {
		assert_non_null(end = strchr(p, '\n'));
		if (strncmp(p, "# TYPE ", 7) == 0) {
			len = strcspn(p + 7, " ");
			assert_true(len < sizeof(family));
			memcpy(family, p + 7, len);
			family[len] = '\0';
			/* Described once. */
			snprintf(type, sizeof(type), "# TYPE %s ", family);
			assert_int_equal(count_lines(text, type), 1);
			continue;
		}
		if (*p == '#')
			continue;
		assert_true(family[0] != '\0');
		if (strncmp(p, family, strlen(family)) != 0)
			fail_msg("%.60s outside its family %s", p, family);
	}
	free(text);
}

static void
test_labelset_cap(void **state)
{
	char	 issuer[32], *text;
	double	 v;
	int	 i;

	(void)state;
	for (i = 0; i < MAX_LABELSETS + 100; i++) {
		snprintf(issuer, sizeof(issuer), "i%d", i);
		metrics_acme_request(issuer, "order", 200, 0.1);
	}
	/* Those already known keep counting. */
	metrics_acme_request("i0", "order", 200, 0.1);
	text = render();
	assert_int_equal(count_lines(text,
	    "acme_sidecar_acme_requests_total{"), MAX_LABELSETS);
	assert_true(sample_value(text, "acme_sidecar_acme_requests_total"
	    "{issuer=\"i0\",endpoint=\"order\",status=\"200\"}") == 2);
	assert_int_equal(sample(text, "acme_sidecar_acme_requests_total"
	    "{issuer=\"i4096\",endpoint=\"order\",status=\"200\"}", &v), -1);
	free(text);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_requests_by_labels, setup),
		cmocka_unit_test_setup(test_histogram_cumulative, setup),
		cmocka_unit_test_setup(test_label_escaping, setup),
		cmocka_unit_test_setup(test_orders, setup),
		cmocka_unit_test_setup(test_reset_clears, setup),
		cmocka_unit_test_setup(test_no_certificates, setup),
		cmocka_unit_test_setup(test_certificates, setup),
		cmocka_unit_test_setup(test_families_grouped, setup),
		cmocka_unit_test_setup(test_labelset_cap, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
