/*
 * acmectl: what the user reads on stdout.
 *
 * Tables and fields for people, the API's own JSON for scripts, and one
 * line per event.  Text from the daemon is printed as it is, but an
 * event line never carries a control byte, nor do the names and errors
 * of the cluster section, which come from Redis.
 */
#include <sys/types.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ctl.h"

/* ---------------------------------------------------------------- output */

/* A scalar as text; "-" for null or missing (times that are "none"). */
const char *
ctl_scalar(json_t *v, char *buf, size_t len)
{
	if (v == NULL || json_is_null(v))
		return "-";
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
		return buf;
	}
	if (json_is_boolean(v))
		return json_is_true(v) ? "yes" : "no";
	return "?";
}

const char *
ctl_field(json_t *o, const char *key, char *buf, size_t len)
{
	return ctl_scalar(json_object_get(o, key), buf, len);
}

/* The API's JSON as it came, indented, for scripts and jq. */
void
ctl_print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
}

/* Columns as wide as their widest cell; row 0 is the header. */
static void
ctl_table(const char *indent, char **cells, size_t rows, size_t cols)
{
	size_t	width[8] = { 0 }, r, c, n;

	if (cols > sizeof(width) / sizeof(width[0]))
		ctl_fatalx("%s: %zu columns", __func__, cols);
	for (r = 0; r < rows; r++) {
		for (c = 0; c < cols; c++) {
			n = strlen(cells[r * cols + c]);
			if (n > width[c])
				width[c] = n;
		}
	}
	for (r = 0; r < rows; r++) {
		fputs(indent, stdout);
		for (c = 0; c < cols - 1; c++)
			printf("%-*s  ", (int)width[c], cells[r * cols + c]);
		printf("%s\n", cells[r * cols + c]);
	}
}

static void
ctl_table_free(char **cells, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		free(cells[i]);
	free(cells);
}

void
ctl_print_issuers(json_t *issuers)
{
	static const char	*head[] = { "NAME", "STATE", "URI" };
	const size_t		 cols = 3;
	size_t			 rows, i, c;
	char			**cells, buf[32];
	json_t			*is;

	rows = json_array_size(issuers) + 1;
	cells = ctl_xreallocarray(NULL, rows * cols, sizeof(*cells));
	for (c = 0; c < cols; c++)
		cells[c] = ctl_xasprintf("%s", head[c]);
	json_array_foreach(issuers, i, is) {
		cells[(i + 1) * cols] = ctl_xasprintf("%s",
		    ctl_field(is, "name", buf, sizeof(buf)));
		cells[(i + 1) * cols + 1] = ctl_xasprintf("%s",
		    ctl_field(is, "state", buf, sizeof(buf)));
		cells[(i + 1) * cols + 2] = ctl_xasprintf("%s",
		    ctl_field(is, "uri", buf, sizeof(buf)));
	}
	ctl_table("  ", cells, rows, cols);
	ctl_table_free(cells, rows * cols);
}

void
ctl_print_uptime(json_int_t s)
{
	json_int_t	d = s / 86400, h = s % 86400 / 3600;
	json_int_t	m = s % 3600 / 60;

	if (d > 0)
		printf("%lldd ", (long long)d);
	if (d > 0 || h > 0)
		printf("%lldh ", (long long)h);
	if (d > 0 || h > 0 || m > 0)
		printf("%lldm ", (long long)m);
	printf("%llds\n", (long long)(s % 60));
}

/* Text of the daemon's, on one line: control bytes become '?'. */
static void
ctl_put_clean(const char *s)
{
	for (; *s != '\0'; s++)
		putchar(iscntrl((unsigned char)*s) ? '?' : *s);
}

static int
ctl_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char * const *)a, *(char * const *)b);
}

/*
 * The "cluster" object of a status: one line while replicas are off, a
 * section while they share Redis.  A daemon older than the cluster sends
 * no such object, and nothing is printed.
 */
void
ctl_print_cluster(json_t *cl)
{
	json_t		*members, *v;
	const char	*secret;
	char		 b1[32], b2[32], **names;
	size_t		 i, n;

	if (!json_is_object(cl))
		return;
	if (!json_is_true(json_object_get(cl, "enabled"))) {
		printf("cluster       off\n");
		return;
	}
	printf("cluster       node %s, %s (%s)\n",
	    ctl_field(cl, "node", b1, sizeof(b1)),
	    json_is_true(json_object_get(cl, "connected")) ? "connected" :
	    "not connected", ctl_field(cl, "state", b2, sizeof(b2)));
	printf("  %-11s %s, prefix %s\n", "redis",
	    ctl_field(cl, "redis", b1, sizeof(b1)),
	    ctl_field(cl, "prefix", b2, sizeof(b2)));
	/*
	 * Names other nodes put in Redis, in the order of their heartbeats:
	 * sorted, so that every node shows the fleet alike.
	 */
	printf("  %-11s", "members");
	members = json_object_get(cl, "members");
	n = json_array_size(members);
	names = ctl_xreallocarray(NULL, n + 1, sizeof(*names));
	json_array_foreach(members, i, v)
		names[i] = ctl_xstrdup(ctl_scalar(v, b1, sizeof(b1)));
	qsort(names, n, sizeof(*names), ctl_cmp_str);
	for (i = 0; i < n; i++) {
		putchar(' ');
		ctl_put_clean(names[i]);
		free(names[i]);
	}
	free(names);
	printf("%s\n", n == 0 ? " (none)" : "");
	secret = ctl_field(cl, "secret", b1, sizeof(b1));
	printf("  %-11s %s%s\n", "secret", secret,
	    strcmp(secret, "mismatch") == 0 ? "; not the fleet's secret_file, "
	    "nothing is written to Redis" : "");
	printf("  %-11s %s held by this node\n", "leases",
	    ctl_field(cl, "leases", b1, sizeof(b1)));
	printf("  %-11s %s connects, %s drops\n", "link",
	    ctl_field(cl, "connects", b1, sizeof(b1)),
	    ctl_field(cl, "drops", b2, sizeof(b2)));
	/* Redis' own words may be in it: kept on one line. */
	printf("  %-11s ", "last error");
	if ((v = json_object_get(cl, "last_error")) == NULL ||
	    json_is_null(v)) {
		printf("-");
	} else {
		ctl_put_clean(ctl_field(cl, "last_error_at", b1, sizeof(b1)));
		printf(": ");
		ctl_put_clean(ctl_scalar(v, b2, sizeof(b2)));
	}
	printf("\n");
}

static int
ctl_cmp_id(const void *a, const void *b)
{
	json_t	*ja = *(json_t * const *)a, *jb = *(json_t * const *)b;
	char	 b1[32], b2[32];

	return strcmp(ctl_field(ja, "id", b1, sizeof(b1)),
	    ctl_field(jb, "id", b2, sizeof(b2)));
}

/* Certificates as a table, one row each, sorted by id. */
void
ctl_print_certs(json_t *a)
{
	static const char	*head[] = { "ID", "STATE", "NOT AFTER",
				    "NEXT RENEWAL", "ISSUER", "FAILURES" };
	static const char	*keys[] = { "id", "state", "not_after",
				    "next_renewal", "issuer", "failures" };
	const size_t		 cols = 6;
	json_t			**sorted;
	char			**cells, buf[32];
	size_t			 rows, i, c;

	/* The API gives no order; a table sorted by id is easier to scan. */
	sorted = ctl_xreallocarray(NULL, json_array_size(a) + 1,
	    sizeof(*sorted));
	for (i = 0; i < json_array_size(a); i++)
		sorted[i] = json_array_get(a, i);
	qsort(sorted, json_array_size(a), sizeof(*sorted), ctl_cmp_id);

	rows = json_array_size(a) + 1;
	cells = ctl_xreallocarray(NULL, rows * cols, sizeof(*cells));
	for (c = 0; c < cols; c++)
		cells[c] = ctl_xasprintf("%s", head[c]);
	for (i = 1; i < rows; i++) {
		for (c = 0; c < cols; c++)
			cells[i * cols + c] = ctl_xasprintf("%s",
			    ctl_field(sorted[i - 1], keys[c], buf,
			    sizeof(buf)));
	}
	ctl_table("", cells, rows, cols);
	ctl_table_free(cells, rows * cols);
	free(sorted);
}

/*
 * Where the next renewal time comes from (ari or lifetime), the CA's ARI
 * window and when it is asked again; the profile asked for.
 */
static void
ctl_print_renewal(json_t *ce)
{
	json_t	*r = json_object_get(ce, "renewal"), *w;
	char	 buf[32], buf2[32];

	printf("%-14s%s\n", "profile", ctl_field(ce, "profile", buf,
	    sizeof(buf)));
	if (!json_is_object(r))
		return;
	printf("%-14s%s\n", "renewal from", ctl_field(r, "source", buf,
	    sizeof(buf)));
	w = json_object_get(r, "ari_window");
	if (json_is_object(w))
		printf("%-14s%s .. %s\n", "ari window",
		    ctl_field(w, "start", buf, sizeof(buf)),
		    ctl_field(w, "end", buf2, sizeof(buf2)));
	else
		printf("%-14s-\n", "ari window");
	printf("%-14s%s\n", "ari next fetch", ctl_field(r, "ari_next_fetch",
	    buf, sizeof(buf)));
	if (json_is_string(json_object_get(r, "ari_explanation_url")))
		printf("%-14s%s\n", "ari explains", json_string_value(
		    json_object_get(r, "ari_explanation_url")));
}

static void
ctl_print_cert(json_t *ce)
{
	static const struct {
		const char	*label, *key;
	} rows[] = {
		{ "id", "id" },
		{ "issuer", "issuer" },
		{ "key type", "key_type" },
		{ "challenge", "challenge" },
		{ "state", "state" },
		{ "valid", "valid" },
		{ "not before", "not_before" },
		{ "not after", "not_after" },
		{ "next renewal", "next_renewal" },
		{ "next retry", "next_retry" },
		{ "failures", "failures" },
	};
	json_t	*v, *err;
	char	 buf[32], buf2[32];
	size_t	 i, k;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		printf("%-14s%s\n", rows[i].label,
		    ctl_field(ce, rows[i].key, buf, sizeof(buf)));
		if (i != 0)
			continue;
		printf("%-14s", "identifiers");
		json_array_foreach(json_object_get(ce, "identifiers"), k, v)
			printf("%s%s", k == 0 ? "" : " ",
			    ctl_scalar(v, buf, sizeof(buf)));
		printf("\n");
	}
	ctl_print_renewal(ce);
	err = json_object_get(ce, "last_error");
	if (err == NULL || json_is_null(err))
		printf("%-14s-\n", "last error");
	else
		printf("%-14s%s: %s\n", "last error",
		    ctl_field(err, "time", buf, sizeof(buf)),
		    ctl_field(err, "message", buf2, sizeof(buf2)));
}

/* One certificate, as show prints it. */
void
ctl_output_cert(const struct ctl_opts *o, json_t *ce)
{
	if (o->o_json)
		ctl_print_json(ce);
	else
		ctl_print_cert(ce);
}

/* An issuer's account, as account show prints it. */
static void
ctl_print_account(json_t *a)
{
	static const struct {
		const char	*label, *key;
	} rows[] = {
		{ "issuer", "issuer" },
		{ "state", "state" },
		{ "url", "url" },
		{ "status", "status" },
		{ "key type", "key_type" },
		{ "thumbprint", "thumbprint" },
		{ "key file", "key_file" },
		{ "cluster", "shared_by_cluster" },
		{ "operation", "operation" },
	};
	static const struct {
		const char	*label, *key;
	} lists[] = {
		{ "contact", "contact" },
		{ "configured", "configured_contact" },
	};
	json_t	*l, *v;
	char	 buf[32];
	size_t	 i, k;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		printf("%-14s%s\n", rows[i].label,
		    ctl_field(a, rows[i].key, buf, sizeof(buf)));
	for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		printf("%-14s", lists[i].label);
		l = json_object_get(a, lists[i].key);
		if (!json_is_array(l))
			printf("-");	/* not read from the CA yet */
		else if (json_array_size(l) == 0)
			printf("(none)");
		json_array_foreach(l, k, v)
			printf("%s%s", k == 0 ? "" : " ",
			    ctl_scalar(v, buf, sizeof(buf)));
		printf("\n");
	}
}

void
ctl_output_account(const struct ctl_opts *o, json_t *a)
{
	if (o->o_json)
		ctl_print_json(a);
	else
		ctl_print_account(a);
}

/* ---------------------------------------------------------------- events */

static void
ctl_put_value(json_t *v)
{
	char	 buf[32], *s;

	if (v == NULL || json_is_null(v) || json_is_string(v) ||
	    json_is_integer(v) || json_is_boolean(v)) {
		ctl_put_clean(ctl_scalar(v, buf, sizeof(buf)));
		return;
	}
	if ((s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
		ctl_fatalx("out of memory");
	ctl_put_clean(s);
	free(s);
}

/*
 * One line per event: time, type, what it is about, then details in
 * parentheses and, last, an error message.  Types this table does not
 * know are printed with all their fields, as key=value.
 */
static const struct ctl_event_fmt {
	const char	*e_type;
	const char	*e_subject;
	const char	*e_keys[3];
	const char	*e_labels[3];
	const char	*e_tail;	/* after ": " */
} ctl_event_fmts[] = {
	{ "order", "certificate", { "issuer", "renewal" },
	    { "issuer", "renewal" }, NULL },
	{ "issued", "certificate", { "not_after" }, { "not after" }, NULL },
	{ "renewed", "certificate", { "not_after" }, { "not after" }, NULL },
	{ "failed", "certificate", { "failures", "next_retry" },
	    { "failures", "next retry" }, "error" },
	{ "revoked", "certificate", { "reason" }, { "reason" }, NULL },
	{ "challenge_served", "token", { NULL }, { NULL }, NULL },
	{ "added", "certificate", { "issuer" }, { "issuer" }, NULL },
	{ "deleted", "certificate", { "issuer" }, { "issuer" }, NULL },
};

static void
ctl_print_event_known(const struct ctl_event_fmt *f, json_t *ev)
{
	size_t	i;

	putchar(' ');
	ctl_put_value(json_object_get(ev, f->e_subject));
	for (i = 0; i < 3 && f->e_keys[i] != NULL; i++) {
		printf("%s%s ", i == 0 ? " (" : ", ", f->e_labels[i]);
		ctl_put_value(json_object_get(ev, f->e_keys[i]));
	}
	if (i > 0)
		putchar(')');
	if (f->e_tail != NULL) {
		fputs(": ", stdout);
		ctl_put_value(json_object_get(ev, f->e_tail));
	}
}

void
ctl_print_event(json_t *ev)
{
	const char	*type, *key;
	json_t		*v;
	size_t		 i;

	type = json_string_value(json_object_get(ev, "type"));
	ctl_put_value(json_object_get(ev, "time"));
	putchar(' ');
	ctl_put_clean(type);
	for (i = 0; i < sizeof(ctl_event_fmts) / sizeof(ctl_event_fmts[0]);
	    i++) {
		if (strcmp(ctl_event_fmts[i].e_type, type) == 0) {
			ctl_print_event_known(&ctl_event_fmts[i], ev);
			putchar('\n');
			return;
		}
	}
	json_object_foreach(ev, key, v) {
		if (strcmp(key, "time") == 0 || strcmp(key, "type") == 0)
			continue;
		putchar(' ');
		ctl_put_clean(key);
		putchar('=');
		ctl_put_value(v);
	}
	putchar('\n');
}

