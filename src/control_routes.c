/*
 * The control API's routes (proto/control-api.md): one table, one row each
 * (method, path, access, the body fields it takes, handler), and the
 * handlers.  A path segment "{id}" matches one segment.  control.c
 * matches the path, checks the caller and the body, then calls the
 * handler, which answers with control_reply() or control_error(), or
 * waits for the CA (control_wait()).
 */
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar.h"
#include "control.h"
#include "textbuf.h"

/* RFC 5280 section 5.3.1 CRLReason; 7 is not used. */
static const struct {
	const char	*name;
	int		 code;
} control_reasons[] = {
	{ "unspecified", 0 }, { "keyCompromise", 1 }, { "cACompromise", 2 },
	{ "affiliationChanged", 3 }, { "superseded", 4 },
	{ "cessationOfOperation", 5 }, { "certificateHold", 6 },
	{ "removeFromCRL", 8 }, { "privilegeWithdrawn", 9 },
	{ "aACompromise", 10 }
};
#define CONTROL_NREASONS (sizeof(control_reasons) / sizeof(control_reasons[0]))

static enum MHD_Result	control_get_status(struct control_ctx *);
static enum MHD_Result	control_get_certs(struct control_ctx *);
static enum MHD_Result	control_get_cert(struct control_ctx *);
static enum MHD_Result	control_get_issuers(struct control_ctx *);
static enum MHD_Result	control_post_reload(struct control_ctx *);
static enum MHD_Result	control_post_renew(struct control_ctx *);
static enum MHD_Result	control_post_cert(struct control_ctx *);
static enum MHD_Result	control_delete_cert(struct control_ctx *);
static enum MHD_Result	control_post_revoke(struct control_ctx *);
static enum MHD_Result	control_get_metrics(struct control_ctx *);
static enum MHD_Result	control_get_account(struct control_ctx *);
static enum MHD_Result	control_post_key_change(struct control_ctx *);
static enum MHD_Result	control_post_deactivate(struct control_ctx *);

static const char *const control_add_fields[] = {
	"issuer", "identifiers", "key", "profile", "challenge", NULL
};
static const char *const control_revoke_fields[] = { "reason", NULL };
static const char *const control_key_change_fields[] = { "key", NULL };

const struct control_route control_routes[] = {
	{ "GET", "/v1/status", CONTROL_READ, NULL, control_get_status },
	{ "GET", "/v1/certificates", CONTROL_READ, NULL, control_get_certs },
	{ "POST", "/v1/certificates", CONTROL_CHANGE, control_add_fields,
	    control_post_cert },
	{ "GET", "/v1/certificates/{id}", CONTROL_READ, NULL,
	    control_get_cert },
	{ "DELETE", "/v1/certificates/{id}", CONTROL_CHANGE, NULL,
	    control_delete_cert },
	{ "POST", "/v1/certificates/{id}/renew", CONTROL_CHANGE, NULL,
	    control_post_renew },
	{ "POST", "/v1/certificates/{id}/revoke", CONTROL_CHANGE,
	    control_revoke_fields, control_post_revoke },
	{ "GET", "/v1/issuers", CONTROL_READ, NULL, control_get_issuers },
	{ "GET", "/v1/issuers/{id}/account", CONTROL_READ, NULL,
	    control_get_account },
	{ "POST", "/v1/issuers/{id}/account/key-change", CONTROL_CHANGE,
	    control_key_change_fields, control_post_key_change },
	{ "POST", "/v1/issuers/{id}/account/deactivate", CONTROL_CHANGE, NULL,
	    control_post_deactivate },
	{ "POST", "/v1/reload", CONTROL_CHANGE, NULL, control_post_reload },
	{ "GET", "/v1/events", CONTROL_READ, NULL, control_get_events },
	{ "GET", "/metrics", CONTROL_READ, NULL, control_get_metrics },
};
const size_t control_nroutes = sizeof(control_routes) /
    sizeof(control_routes[0]);

const struct control_service control_services[] = {
	{ control_stream_start, control_stream_stop },
};
const size_t control_nservices = sizeof(control_services) /
    sizeof(control_services[0]);

/* RFC 3339 in UTC, or JSON null for "never". */
static json_t *
control_time(time_t t)
{
	char	 buf[UTIL_TIME_LEN];

	if (t == 0)
		return json_null();
	util_time_rfc3339(t, buf, sizeof(buf));
	return json_string(buf);
}

/*
 * Text from outside (a CA's header, Redis, a hook's output in an error)
 * need not be UTF-8, which json_string() refuses: control_message()
 * turns such bytes into '?' rather than failing the answer.
 */
static json_t *
control_str(const char *s)
{
	return s != NULL ? control_message(s) : json_null();
}

/*
 * Where next_renewal comes from: "ari", a moment inside the window the
 * CA's renewalInfo suggested (RFC 9773), or "lifetime", the 2/3 rule.
 */
static json_t *
control_renewal_json(const struct order_info *oi)
{
	json_t	*w = json_null(), *j;

	if (oi->oi_ari_end != 0)
		w = json_pack("{s:o, s:o}", "start",
		    control_time(oi->oi_ari_start), "end",
		    control_time(oi->oi_ari_end));
	j = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}",
	    "source", oi->oi_renew_at == 0 ? json_null() :
	    json_string(oi->oi_renew_ari ? "ari" : "lifetime"),
	    "at", control_time(oi->oi_renew_at),
	    "ari_window", w,
	    "ari_next_fetch", control_time(oi->oi_ari_next_fetch),
	    "ari_explanation_url", control_str(oi->oi_ari_explanation),
	    "ari_cert_id", control_str(oi->oi_cert_id));
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}

/*
 * One certificate as GET /v1/certificates/{id} and the changes show it.
 * control_cert_line() writes the same text for the list, faster.
 */
json_t *
control_cert_info_json(const struct order_info *oi, int valid,
    enum challenge_type challenge)
{
	json_t	*j, *ids, *err = json_null();
	size_t	 i;

	ids = json_array();
	for (i = 0; i < oi->oi_nidents; i++)
		json_array_append_new(ids, control_str(oi->oi_idents[i]));
	if (oi->oi_last_error != NULL)
		err = json_pack("{s:o, s:o}", "message",
		    control_str(oi->oi_last_error),
		    "time", control_time(oi->oi_last_error_at));
	j = json_pack("{s:o, s:o, s:o, s:s, s:s, s:b, s:o, s:o, s:o, s:o, "
	    "s:i, s:o}",
	    "id", control_str(oi->oi_id),
	    "identifiers", ids,
	    "issuer", control_str(oi->oi_issuer),
	    "key_type", key_type_name(oi->oi_key),
	    "state", order_state_name(oi->oi_state),
	    "valid", valid,
	    "not_before", control_time(oi->oi_not_before),
	    "not_after", control_time(oi->oi_not_after),
	    "next_renewal", control_time(oi->oi_renew_at),
	    "next_retry", control_time(oi->oi_retry_at),
	    "failures", oi->oi_failures,
	    "last_error", err);
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	json_object_set_new(j, "profile", control_str(oi->oi_profile));
	json_object_set_new(j, "challenge",
	    json_string(conf_challenge_name(challenge)));
	json_object_set_new(j, "renewal", control_renewal_json(oi));
	return j;
}

static json_t *
control_cert_json(const struct cert *ce)
{
	struct order_info	 oi;

	order_cert_info(ce, &oi);
	return control_cert_info_json(&oi, order_cert_valid(ce),
	    order_cert_challenge(ce));
}

/* ------------------------------------------------------------- the list */

#define CONTROL_ADD(tb, lit)	textbuf_add((tb), (lit), sizeof(lit) - 1)

/*
 * A string as jansson writes it.  Most are printable ASCII with nothing
 * to escape and are copied; jansson escapes the others.  Text that is
 * not UTF-8 gets '?' for each byte outside ASCII, as error messages do.
 */
static void
control_line_str(struct textbuf *tb, const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	json_t			*j;
	size_t			 len;

	if (s == NULL) {
		CONTROL_ADD(tb, "null");
		return;
	}
	while (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
		p++;
	if (*p == '\0') {
		len = (const char *)p - s;
		textbuf_reserve(tb, len + 2);
		tb->tb_buf[tb->tb_len++] = '"';
		memcpy(tb->tb_buf + tb->tb_len, s, len);
		tb->tb_len += len;
		tb->tb_buf[tb->tb_len++] = '"';
		tb->tb_buf[tb->tb_len] = '\0';
		return;
	}
	j = control_message(s);
	len = json_dumpb(j, NULL, 0, JSON_ENCODE_ANY);
	textbuf_reserve(tb, len);
	if (json_dumpb(j, tb->tb_buf + tb->tb_len, len, JSON_ENCODE_ANY) !=
	    len)
		fatalx("%s: json_dumpb", __func__);
	tb->tb_len += len;
	tb->tb_buf[tb->tb_len] = '\0';
	json_decref(j);
}

/* v in n decimal digits at p, zeros first; printf costs more per field. */
static void
control_digits(char *p, long long v, int n)
{
	while (n-- > 0) {
		p[n] = '0' + v % 10;
		v /= 10;
	}
}

/*
 * RFC 3339 in UTC, or null for "never", as control_time() gives it.  The
 * date comes from the day count (the proleptic Gregorian calendar in
 * 400-year eras), not gmtime_r() and strftime(): with six times per
 * certificate those showed in the list's profile.  Times before 1970 or
 * after 9999 take the slow way.
 */
static void
control_line_time(struct textbuf *tb, time_t t)
{
	char		 buf[UTIL_TIME_LEN];
	long long	 days, era, doe, yoe, doy, mp, year, month, day, sec;

	if (t == 0) {
		CONTROL_ADD(tb, "null");
		return;
	}
	if (t < 0 || t >= 253402300800LL) {
		util_time_rfc3339(t, buf, sizeof(buf));
		control_line_str(tb, buf);
		return;
	}
	days = t / 86400 + 719468;	/* since 0000-03-01 */
	sec = t % 86400;
	era = days / 146097;
	doe = days - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;	/* months from March */
	day = doy - (153 * mp + 2) / 5 + 1;
	month = mp < 10 ? mp + 3 : mp - 9;
	year = yoe + era * 400 + (month <= 2);
	memcpy(buf, "\"0000-00-00T00:00:00Z\"", 22);
	control_digits(buf + 1, year, 4);
	control_digits(buf + 6, month, 2);
	control_digits(buf + 9, day, 2);
	control_digits(buf + 12, sec / 3600, 2);
	control_digits(buf + 15, sec / 60 % 60, 2);
	control_digits(buf + 18, sec % 60, 2);
	textbuf_add(tb, buf, 22);
}

static void
control_line_error(struct textbuf *tb, const struct order_info *oi)
{
	if (oi->oi_last_error == NULL) {
		CONTROL_ADD(tb, "null");
		return;
	}
	CONTROL_ADD(tb, "{\"message\": ");
	control_line_str(tb, oi->oi_last_error);
	CONTROL_ADD(tb, ", \"time\": ");
	control_line_time(tb, oi->oi_last_error_at);
	CONTROL_ADD(tb, "}");
}

/* What control_renewal_json() holds. */
static void
control_line_renewal(struct textbuf *tb, const struct order_info *oi)
{
	CONTROL_ADD(tb, "{\"source\": ");
	if (oi->oi_renew_at == 0)
		CONTROL_ADD(tb, "null");
	else if (oi->oi_renew_ari)
		CONTROL_ADD(tb, "\"ari\"");
	else
		CONTROL_ADD(tb, "\"lifetime\"");
	CONTROL_ADD(tb, ", \"at\": ");
	control_line_time(tb, oi->oi_renew_at);
	CONTROL_ADD(tb, ", \"ari_window\": ");
	if (oi->oi_ari_end != 0) {
		CONTROL_ADD(tb, "{\"start\": ");
		control_line_time(tb, oi->oi_ari_start);
		CONTROL_ADD(tb, ", \"end\": ");
		control_line_time(tb, oi->oi_ari_end);
		CONTROL_ADD(tb, "}");
	} else
		CONTROL_ADD(tb, "null");
	CONTROL_ADD(tb, ", \"ari_next_fetch\": ");
	control_line_time(tb, oi->oi_ari_next_fetch);
	CONTROL_ADD(tb, ", \"ari_explanation_url\": ");
	control_line_str(tb, oi->oi_ari_explanation);
	CONTROL_ADD(tb, ", \"ari_cert_id\": ");
	control_line_str(tb, oi->oi_cert_id);
	CONTROL_ADD(tb, "}");
}

/*
 * One certificate on one line, byte for byte what jansson writes of
 * control_cert_info_json() without indenting (tests/unit/test_control.c
 * holds them to that), without building that tree for each of 10,000.
 */
void
control_cert_line(struct textbuf *tb, const struct order_info *oi,
    int valid, enum challenge_type challenge)
{
	char	 failures[16];
	size_t	 i;

	CONTROL_ADD(tb, "{\"id\": ");
	control_line_str(tb, oi->oi_id);
	CONTROL_ADD(tb, ", \"identifiers\": [");
	for (i = 0; i < oi->oi_nidents; i++) {
		if (i > 0)
			CONTROL_ADD(tb, ", ");
		control_line_str(tb, oi->oi_idents[i]);
	}
	CONTROL_ADD(tb, "], \"issuer\": ");
	control_line_str(tb, oi->oi_issuer);
	CONTROL_ADD(tb, ", \"key_type\": ");
	control_line_str(tb, key_type_name(oi->oi_key));
	CONTROL_ADD(tb, ", \"state\": ");
	control_line_str(tb, order_state_name(oi->oi_state));
	if (valid)
		CONTROL_ADD(tb, ", \"valid\": true, \"not_before\": ");
	else
		CONTROL_ADD(tb, ", \"valid\": false, \"not_before\": ");
	control_line_time(tb, oi->oi_not_before);
	CONTROL_ADD(tb, ", \"not_after\": ");
	control_line_time(tb, oi->oi_not_after);
	CONTROL_ADD(tb, ", \"next_renewal\": ");
	control_line_time(tb, oi->oi_renew_at);
	CONTROL_ADD(tb, ", \"next_retry\": ");
	control_line_time(tb, oi->oi_retry_at);
	CONTROL_ADD(tb, ", \"failures\": ");
	snprintf(failures, sizeof(failures), "%d", oi->oi_failures);
	textbuf_puts(tb, failures);
	CONTROL_ADD(tb, ", \"last_error\": ");
	control_line_error(tb, oi);
	CONTROL_ADD(tb, ", \"profile\": ");
	control_line_str(tb, oi->oi_profile);
	CONTROL_ADD(tb, ", \"challenge\": ");
	control_line_str(tb, conf_challenge_name(challenge));
	CONTROL_ADD(tb, ", \"renewal\": ");
	control_line_renewal(tb, oi);
	CONTROL_ADD(tb, "}");
}

static json_t *
control_issuer_json(const struct acme_issuer *ai)
{
	const char	*url = acme_issuer_account_url(ai);
	json_t		*j;

	j = json_pack("{s:s, s:s, s:s, s:o}",
	    "name", acme_issuer_name(ai),
	    "uri", acme_issuer_uri(ai),
	    "state", acme_issuer_state_name(acme_issuer_state(ai)),
	    "account_url", control_str(url));
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}

static json_t *
control_issuers_json(void)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; i < sched_issuer_count(); i++)
		json_array_append_new(a, control_issuer_json(sched_issuer_at(i)));
	return a;
}

/*
 * Whether nginx's workers can open the segment, as judged at start:
 * "can_open" is null when who they are is not known here.
 */
static json_t *
control_zone_readers_json(void)
{
	const struct zone_readers	*zr = zone_readers_get();
	json_t				*j;

	if (zr->zr_state == ZONE_READERS_UNKNOWN && zr->zr_user[0] == '\0')
		return json_pack("{s:n, s:n, s:n, s:n, s:n}", "user", "group",
		    "from", "can_open", "problem");
	j = json_pack("{s:s, s:s, s:s, s:o, s:o}", "user", zr->zr_user,
	    "group", zr->zr_group, "from", zr->zr_source,
	    "can_open", zr->zr_state == ZONE_READERS_UNKNOWN ? json_null() :
	    json_boolean(zr->zr_state == ZONE_READERS_YES),
	    "problem", zr->zr_state == ZONE_READERS_NO ?
	    control_str(zr->zr_why) : json_null());
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}

/* The segment nginx reads; "full" means nginx is serving an older image. */
static json_t *
control_zone_json(void)
{
	struct shm_stats	 st;
	json_t			*j;

	shm_get_stats(&st);
	j = json_pack("{s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I}",
	    "generation", (json_int_t)st.ss_generation,
	    "full", st.ss_full,
	    "size", (json_int_t)st.ss_zone_size,
	    "used", (json_int_t)st.ss_zone_used,
	    "image_size", (json_int_t)st.ss_image_bytes,
	    "certificates", (json_int_t)st.ss_certs,
	    "tokens", (json_int_t)st.ss_tokens,
	    "failed_publishes", (json_int_t)st.ss_failures);
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	json_object_set_new(j, "nginx_workers", control_zone_readers_json());
	return j;
}

/* "cluster": {"enabled": false}, or the link, members and leases. */
static json_t *
control_cluster_json(void)
{
	struct cluster_status	 cs;
	json_t			*j, *members;
	char			 at[UTIL_TIME_LEN];
	size_t			 i;

	cluster_get_status(&cs);
	if (!cs.cs_enabled)
		return json_pack("{s:b}", "enabled", 0);
	members = json_array();
	for (i = 0; i < cs.cs_nmembers; i++)
		json_array_append_new(members, control_str(cs.cs_members[i]));
	j = json_pack("{s:b, s:b, s:s, s:s, s:s, s:s, s:o, s:I, s:s, s:I, "
	    "s:I}", "enabled", 1, "connected", cs.cs_connected,
	    "state", cs.cs_state, "node", cs.cs_node, "redis", cs.cs_url,
	    "prefix", cs.cs_prefix, "members", members,
	    "leases", (json_int_t)cs.cs_leases,
	    "secret", cs.cs_secret_ok == 1 ? "ok" : cs.cs_secret_ok == 0 ?
	    "mismatch" : "unchecked",
	    "connects", (json_int_t)cs.cs_connects,
	    "drops", (json_int_t)cs.cs_drops);
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	if (cs.cs_last_error != NULL) {
		util_time_rfc3339(cs.cs_last_error_at, at, sizeof(at));
		json_object_set_new(j, "last_error",
		    control_str(cs.cs_last_error));
		json_object_set_new(j, "last_error_at", json_string(at));
	}
	return j;
}

static enum MHD_Result
control_get_status(struct control_ctx *cx)
{
	json_t		*states, *j;
	size_t		 i, n = sched_cert_count(), valid = 0;
	size_t		 count[ORDER_STATE_MAX] = { 0 };
	struct cert	*ce;

	for (i = 0; i < n; i++) {
		ce = sched_cert_at(i);
		count[order_cert_state(ce)]++;
		if (order_cert_valid(ce))
			valid++;
	}
	states = json_object();
	for (i = 0; i < ORDER_STATE_MAX; i++)
		json_object_set_new(states, order_state_name(i),
		    json_integer((json_int_t)count[i]));
	j = json_pack("{s:s, s:I, s:o, s:{s:I, s:I, s:o}, s:o, s:o}",
	    "version", SIDECAR_VERSION,
	    "uptime", (json_int_t)control_uptime(),
	    "issuers", control_issuers_json(),
	    "certificates", "total", (json_int_t)n, "valid", (json_int_t)valid,
	    "by_state", states,
	    "shared_zone", control_zone_json(),
	    "cluster", control_cluster_json());
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return control_reply(cx->cx_conn, MHD_HTTP_OK, j, NULL, NULL);
}

/*
 * The list is written one certificate at a time, each on one line: with
 * 10,000 certificates a tree of them all, indented, took most of the
 * 100 ms this call may take (scripts/bench/control), and a tree for each
 * one, dumped, still 70 ms.  So the lines are written straight into a
 * buffer (control_cert_line()).
 *
 * And streamed, CONTROL_LIST_CHUNK at a time, as libmicrohttpd asks for
 * more: the whole answer (5.7 MB at 10,000) in one buffer stayed in the
 * daemon's heap after it was sent, and showed in its peak RSS.  The list
 * is of the certificates there when the request came; one deleted while
 * it is sent is left out, one added is not in it.
 */
#define CONTROL_LIST_CHUNK	(64 * 1024)

struct control_list {
	char		**cl_ids;	/* the certificates when asked */
	size_t		  cl_n;
	size_t		  cl_next;	/* the next one to write */
	size_t		  cl_lines;	/* lines written */
	int		  cl_done;	/* the closing bracket is written */
	struct textbuf	  cl_tb;	/* written, cl_off of it sent */
	size_t		  cl_off;
};

/*
 * The certificate with the i-th id of the list, if it is still there:
 * where it was when the list began, unless certificates came or went
 * since (then it is looked up by id).
 */
static struct cert *
control_list_cert(const struct control_list *cl, size_t i)
{
	struct cert	*ce;

	if (i < sched_cert_count()) {
		ce = sched_cert_at(i);
		if (strcmp(order_cert_id(ce), cl->cl_ids[i]) == 0)
			return ce;
	}
	return sched_cert_find(cl->cl_ids[i]);
}

/* The next lines, once what was written before has been sent. */
static void
control_list_fill(struct control_list *cl)
{
	struct textbuf		*tb = &cl->cl_tb;
	struct order_info	 oi;
	struct cert		*ce;

	tb->tb_len = cl->cl_off = 0;
	while (tb->tb_len < CONTROL_LIST_CHUNK && cl->cl_next < cl->cl_n) {
		if ((ce = control_list_cert(cl, cl->cl_next++)) == NULL)
			continue;
		if (cl->cl_lines++ == 0)
			CONTROL_ADD(tb, "\n    ");
		else
			CONTROL_ADD(tb, ",\n    ");
		order_cert_info(ce, &oi);
		control_cert_line(tb, &oi, order_cert_valid(ce),
		    order_cert_challenge(ce));
	}
	if (cl->cl_next == cl->cl_n) {
		if (cl->cl_lines == 0)
			CONTROL_ADD(tb, "]\n}\n");
		else
			CONTROL_ADD(tb, "\n  ]\n}\n");
		cl->cl_done = 1;
	}
}

static ssize_t
control_list_read(void *arg, uint64_t pos, char *buf, size_t max)
{
	struct control_list	*cl = arg;
	size_t			 n;

	(void)pos;
	if (cl->cl_off == cl->cl_tb.tb_len) {
		if (cl->cl_done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		control_list_fill(cl);
	}
	n = cl->cl_tb.tb_len - cl->cl_off;
	if (n > max)
		n = max;
	memcpy(buf, cl->cl_tb.tb_buf + cl->cl_off, n);
	cl->cl_off += n;
	return (ssize_t)n;
}

static void
control_list_free(void *arg)
{
	struct control_list	*cl = arg;
	size_t			 i;

	for (i = 0; i < cl->cl_n; i++)
		free(cl->cl_ids[i]);
	free(cl->cl_ids);
	free(cl->cl_tb.tb_buf);
	free(cl);
}

static enum MHD_Result
control_get_certs(struct control_ctx *cx)
{
	struct control_list	*cl;
	struct MHD_Response	*resp;
	enum MHD_Result		 ret;
	size_t			 i;

	cl = xcalloc(1, sizeof(*cl));
	cl->cl_n = sched_cert_count();
	cl->cl_ids = xreallocarray(NULL, cl->cl_n + 1, sizeof(*cl->cl_ids));
	for (i = 0; i < cl->cl_n; i++)
		cl->cl_ids[i] = xstrdup(order_cert_id(sched_cert_at(i)));
	CONTROL_ADD(&cl->cl_tb, "{\n  \"certificates\": [");
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN,
	    CONTROL_LIST_CHUNK, control_list_read, cl, control_list_free);
	if (resp == NULL) {
		control_list_free(cl);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/json");
	ret = MHD_queue_response(cx->cx_conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
control_get_cert(struct control_ctx *cx)
{
	struct cert	*ce;

	if ((ce = sched_cert_find(cx->cx_id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	return control_reply(cx->cx_conn, MHD_HTTP_OK, control_cert_json(ce),
	    NULL, NULL);
}

static enum MHD_Result
control_get_issuers(struct control_ctx *cx)
{
	return control_reply(cx->cx_conn, MHD_HTTP_OK,
	    json_pack("{s:o}", "issuers", control_issuers_json()), NULL,
	    NULL);
}

/* The same reload as SIGHUP; a configuration that fails is refused. */
static enum MHD_Result
control_post_reload(struct control_ctx *cx)
{
	enum MHD_Result	 ret;
	char		*cause = NULL;

	if (control_hooks()->ch_reload(&cause) == -1) {
		ret = control_error(cx->cx_conn,
		    MHD_HTTP_UNPROCESSABLE_CONTENT, NULL,
		    "reload refused, the running configuration is kept: %s",
		    cause);
		free(cause);
		return ret;
	}
	return control_reply(cx->cx_conn, MHD_HTTP_OK, json_pack("{s:b, s:I}",
	    "reloaded", 1, "certificates", (json_int_t)sched_cert_count()),
	    NULL, NULL);
}

static enum MHD_Result
control_post_renew(struct control_ctx *cx)
{
	struct cert		*ce;
	enum order_state	 st;

	if ((ce = sched_cert_find(cx->cx_id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	st = order_cert_state(ce);
	if (st != ORDER_IDLE && st != ORDER_BACKOFF)
		return control_error(cx->cx_conn, MHD_HTTP_CONFLICT, NULL,
		    "certificate \"%s\": an order is already under way (%s)",
		    cx->cx_id, order_state_name(st));
	log_info("certificate \"%s\": renewal asked through the control "
	    "socket", cx->cx_id);
	order_renew_now(ce);
	return control_reply(cx->cx_conn, MHD_HTTP_ACCEPTED,
	    control_cert_json(ce), NULL, NULL);
}

/* A field that must be a string, or NULL with a 400 queued. */
static const char *
control_string_field(struct control_ctx *cx, const char *name, int required,
    int *failed)
{
	json_t	*v = json_object_get(cx->cx_body, name);

	*failed = 0;
	if (v == NULL && !required)
		return NULL;
	if (json_is_string(v))
		return json_string_value(v);
	*failed = 1;
	control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL, v == NULL ?
	    "missing field \"%s\"" : "field \"%s\" must be a string", name);
	return NULL;
}

/* "identifiers": a non-empty array of strings; NULL with a 400 queued. */
static const char **
control_idents_field(struct control_ctx *cx, size_t *n)
{
	json_t		*a = json_object_get(cx->cx_body, "identifiers"), *v;
	const char	**idents;
	size_t		 i;

	if (!json_is_array(a) || json_array_size(a) == 0) {
		control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL, a == NULL ?
		    "missing field \"identifiers\"" : "field \"identifiers\" "
		    "must be a non-empty array of strings");
		return NULL;
	}
	if (json_array_size(a) > CONF_MAX_IDENTS) {
		control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL,
		    "field \"identifiers\" holds %zu identifiers: one "
		    "certificate may have at most %d", json_array_size(a),
		    CONF_MAX_IDENTS);
		return NULL;
	}
	idents = xreallocarray(NULL, json_array_size(a), sizeof(*idents));
	json_array_foreach(a, i, v) {
		if ((idents[i] = json_string_value(v)) == NULL) {
			free(idents);
			control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL,
			    "identifiers[%zu] must be a string", i);
			return NULL;
		}
	}
	*n = json_array_size(a);
	return idents;
}

static unsigned int
control_result_status(enum control_result r)
{
	switch (r) {
	case CONTROL_OK:
		return MHD_HTTP_OK;
	case CONTROL_INVALID:
		return MHD_HTTP_UNPROCESSABLE_CONTENT;
	case CONTROL_CONFLICT:
		return MHD_HTTP_CONFLICT;
	case CONTROL_NOT_FOUND:
		return MHD_HTTP_NOT_FOUND;
	case CONTROL_UNAVAILABLE:
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	case CONTROL_FAILED:
		break;
	}
	return MHD_HTTP_INTERNAL_SERVER_ERROR;
}

/* Add a certificate as an acme_certificate line would (main.c saves it). */
static enum MHD_Result
control_post_cert(struct control_ctx *cx)
{
	const char		*issuer, *key, *profile, *challenge, *id;
	const char		**idents;
	char			*cause = NULL, location[600];
	struct cert		*ce;
	enum control_result	 r;
	enum MHD_Result		 ret;
	size_t			 n;
	int			 failed;

	if ((issuer = control_string_field(cx, "issuer", 1, &failed)) == NULL)
		return MHD_YES;
	key = control_string_field(cx, "key", 0, &failed);
	if (failed)
		return MHD_YES;
	profile = control_string_field(cx, "profile", 0, &failed);
	if (failed)
		return MHD_YES;
	challenge = control_string_field(cx, "challenge", 0, &failed);
	if (failed || (idents = control_idents_field(cx, &n)) == NULL)
		return MHD_YES;
	r = control_hooks()->ch_add(issuer, (char *const *)idents, n, key,
	    profile, challenge, &id, &cause);
	free(idents);
	if (r != CONTROL_OK) {
		ret = control_error(cx->cx_conn, control_result_status(r), NULL,
		    "%s", cause);
		free(cause);
		return ret;
	}
	if ((ce = sched_cert_find(id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
		    NULL, "certificate \"%s\" is saved but its issuer is not "
		    "running", id);
	snprintf(location, sizeof(location), "/v1/certificates/%s", id);
	return control_reply(cx->cx_conn, MHD_HTTP_CREATED,
	    control_cert_json(ce), MHD_HTTP_HEADER_LOCATION, location);
}

static enum MHD_Result
control_delete_cert(struct control_ctx *cx)
{
	enum control_result	 r;
	enum MHD_Result		 ret;
	char			*cause = NULL;

	if (sched_cert_find(cx->cx_id) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	if ((r = control_hooks()->ch_remove(cx->cx_id, &cause)) != CONTROL_OK) {
		ret = control_error(cx->cx_conn, control_result_status(r), NULL,
		    "%s", cause);
		free(cause);
		return ret;
	}
	return control_reply(cx->cx_conn, MHD_HTTP_OK,
	    json_pack("{s:s}", "deleted", cx->cx_id), NULL, NULL);
}

/* "reason": an RFC 5280 name or code; -1 with a 400 queued. */
static int
control_reason(struct control_ctx *cx)
{
	json_t		*v = json_object_get(cx->cx_body, "reason");
	const char	*name = json_string_value(v);
	size_t		 i;

	if (v == NULL)
		return 0;
	for (i = 0; i < CONTROL_NREASONS; i++) {
		if (name != NULL && strcmp(name, control_reasons[i].name) == 0)
			return (int)i;
		if (json_is_integer(v) &&
		    json_integer_value(v) == control_reasons[i].code)
			return (int)i;
	}
	control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL, "invalid "
	    "\"reason\": an RFC 5280 reason is expected, by name "
	    "(\"keyCompromise\") or by code (0-6, 8-10)");
	return -1;
}

/* The CA answered a revocation: wake its request up with the answer. */
static void
control_revoked(int rc, const char *why, void *arg)
{
	struct control_req	*cr = arg;
	struct cert		*ce = cr->cr_revoking;
	unsigned int		 status;
	json_t			*answer;

	cr->cr_revoking = NULL;
	if (rc == 0) {
		status = MHD_HTTP_OK;
		answer = json_pack("{s:s, s:s, s:o}", "revoked",
		    order_cert_id(ce), "reason", cr->cr_reason,
		    "certificate", control_cert_json(ce));
		if (answer == NULL)
			fatalx("%s: json_pack", __func__);
	} else {
		status = rc == -2 ? MHD_HTTP_CONFLICT : MHD_HTTP_BAD_GATEWAY;
		answer = control_error_json(status, why);
	}
	control_answer(cr, status, answer);
}

/* The daemon stops with the revocation under way: no more waiting. */
static void
control_revoke_cancel(struct control_req *cr)
{
	order_revoke_cancel(cr->cr_revoking);
	cr->cr_revoking = NULL;
}

static enum MHD_Result
control_post_revoke(struct control_ctx *cx)
{
	struct cert		*ce;
	struct acme_issuer	*ai;
	struct order_info	 oi;
	enum MHD_Result		 ret;
	char			*cause = NULL;
	int			 i, rc;

	if ((ce = sched_cert_find(cx->cx_id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	if ((i = control_reason(cx)) == -1)
		return MHD_YES;
	ai = order_cert_issuer(ce);
	if (acme_issuer_state(ai) != ISSUER_READY ||
	    acme_issuer_revoke_url(ai) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_SERVICE_UNAVAILABLE,
		    NULL, "issuer \"%s\" cannot revoke now: %s",
		    acme_issuer_name(ai), acme_issuer_state(ai) != ISSUER_READY ?
		    "its account is not ready" : "its directory has no "
		    "revokeCert");
	order_cert_info(ce, &oi);
	if (!oi.oi_have || order_revoking(ce))
		return control_error(cx->cx_conn, MHD_HTTP_CONFLICT, NULL,
		    "certificate \"%s\": %s", cx->cx_id, !oi.oi_have ?
		    "no certificate is stored yet" : "a revocation is already "
		    "under way");
	if ((rc = order_revoke(ce, control_reasons[i].code,
	    control_reasons[i].name, control_revoked, cx->cx_req,
	    &cause)) != 0) {
		ret = control_error(cx->cx_conn, rc == -2 ? MHD_HTTP_CONFLICT :
		    MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
		    "certificate \"%s\": %s", cx->cx_id, cause);
		free(cause);
		return ret;
	}
	log_info("certificate \"%s\": revocation (%s) asked through the "
	    "control socket", cx->cx_id, control_reasons[i].name);
	cx->cx_req->cr_revoking = ce;
	cx->cx_req->cr_reason = control_reasons[i].name;
	control_wait(cx, control_revoke_cancel);
	return MHD_YES;
}

/* --------------------------------------------------------------- accounts */

static enum MHD_Result
control_no_issuer(struct control_ctx *cx)
{
	return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
	    "no issuer \"%s\"", cx->cx_id);
}

static enum MHD_Result
control_get_account(struct control_ctx *cx)
{
	struct acme_issuer	*ai;

	if ((ai = sched_find_issuer(cx->cx_id)) == NULL)
		return control_no_issuer(cx);
	return control_reply(cx->cx_conn, MHD_HTTP_OK, acme_account_json(ai),
	    NULL, NULL);
}

/*
 * The CA answered an account operation (or the issuer stopped before
 * it did, and is going: then it is not looked at).
 */
static void
control_account_done(int rc, const char *why, void *arg)
{
	struct control_req	*cr = arg;
	struct acme_issuer	*ai = cr->cr_account;

	cr->cr_account = NULL;
	if (rc == 0)
		control_answer(cr, MHD_HTTP_OK, acme_account_json(ai));
	else
		control_answer(cr, MHD_HTTP_BAD_GATEWAY,
		    control_error_json(MHD_HTTP_BAD_GATEWAY, why));
}

/* The daemon stops first: the outcome is only in the log. */
static void
control_account_cancel(struct control_req *cr)
{
	acme_account_forget(cr->cr_account);
	cr->cr_account = NULL;
	cr->cr_status = MHD_HTTP_SERVICE_UNAVAILABLE;
	cr->cr_answer = control_error_json(cr->cr_status,
	    "the daemon is stopping; the operation's outcome is in its log");
}

/* An operation started (wait for the CA), or refused: a 409 now. */
static enum MHD_Result
control_account_wait(struct control_ctx *cx, struct acme_issuer *ai, int rc,
    char *cause)
{
	enum MHD_Result	 ret;

	if (rc == -1) {
		ret = control_error(cx->cx_conn, MHD_HTTP_CONFLICT, NULL, "%s",
		    cause);
		free(cause);
		return ret;
	}
	cx->cx_req->cr_account = ai;
	control_wait(cx, control_account_cancel);
	return MHD_YES;
}

static enum MHD_Result
control_post_key_change(struct control_ctx *cx)
{
	struct acme_issuer	*ai;
	const char		*key;
	enum key_type		 type;
	char			*cause = NULL;
	int			 failed, rc;

	if ((ai = sched_find_issuer(cx->cx_id)) == NULL)
		return control_no_issuer(cx);
	key = control_string_field(cx, "key", 0, &failed);
	if (failed)
		return MHD_YES;
	if (key != NULL && key_type_parse(key, &type) == -1)
		return control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL,
		    "invalid \"key\" \"%s\": ecdsa:256, ecdsa:384, "
		    "ecdsa:521, rsa:2048, rsa:3072 or rsa:4096 is expected",
		    key);
	log_info("issuer \"%s\": account key rollover asked through the "
	    "control socket", cx->cx_id);
	rc = acme_account_key_change(ai, key != NULL ? (int)type : -1,
	    control_account_done, cx->cx_req, &cause);
	return control_account_wait(cx, ai, rc, cause);
}

static enum MHD_Result
control_post_deactivate(struct control_ctx *cx)
{
	struct acme_issuer	*ai;
	char			*cause = NULL;
	int			 rc;

	if ((ai = sched_find_issuer(cx->cx_id)) == NULL)
		return control_no_issuer(cx);
	log_info("issuer \"%s\": account deactivation asked through the "
	    "control socket", cx->cx_id);
	rc = acme_account_deactivate(ai, control_account_done, cx->cx_req,
	    &cause);
	return control_account_wait(cx, ai, rc, cause);
}

/*
 * What /metrics shows besides metrics.c's own counters, taken now.  The
 * order_info strings point into the certificates, which stay put while
 * the page is rendered.
 */
static void
control_metrics_snapshot(struct metrics_snapshot *ms, struct order_info **oi,
    int **valid)
{
	struct cert	*ce;
	size_t		 i, n = sched_cert_count();

	memset(ms, 0, sizeof(*ms));
	*oi = n != 0 ? xreallocarray(NULL, n, sizeof(**oi)) : NULL;
	*valid = n != 0 ? xreallocarray(NULL, n, sizeof(**valid)) : NULL;
	for (i = 0; i < n; i++) {
		ce = sched_cert_at(i);
		order_cert_info(ce, &(*oi)[i]);
		(*valid)[i] = order_cert_valid(ce);
	}
	ms->ms_certs = *oi;
	ms->ms_valid = *valid;
	ms->ms_ncerts = n;
	ms->ms_challenges_served = challenge_served();
	ready_get_stats(&ms->ms_ready);
	shm_get_stats(&ms->ms_shm);
	cluster_get_status(&ms->ms_cluster);
}

static enum MHD_Result
control_get_metrics(struct control_ctx *cx)
{
	struct metrics_snapshot	 ms;
	struct order_info	*oi;
	int			*valid;
	char			*text;

	control_metrics_snapshot(&ms, &oi, &valid);
	text = metrics_render(&ms);
	free(valid);
	free(oi);
	return control_send(cx->cx_conn, MHD_HTTP_OK, text, strlen(text),
	    "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
}
