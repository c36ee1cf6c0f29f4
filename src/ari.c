/*
 * ACME Renewal Information (RFC 9773): the CertID that names a
 * certificate to the CA, the CA's renewalInfo answer, and the times that
 * follow from it.  Pure functions: order_ari.c does the fetching and
 * store.c the keeping.
 */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "sidecar.h"

#define ARI_EXPLANATION_MAX	1024
#define ARI_TIME_MAX		((time_t)1 << 40)	/* sane, and no overflow */

void
ari_state_clear(struct ari_state *as)
{
	free(as->as_cert_id);
	free(as->as_explanation);
	memset(as, 0, sizeof(*as));
}

/*
 * RFC 9773 section 4.1: base64url(keyIdentifier of the Authority Key
 * Identifier) "." base64url(the serial's DER content octets, without tag
 * and length).  From the first certificate of a PEM chain; caller frees.
 */
char *
ari_cert_id(const char *pem, char **cause)
{
	BIO	*bio;
	X509	*x;
	char	*id = NULL;

	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
		fatalx("%s: BIO_new_mem_buf", __func__);
	if ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL)
		xasprintf(cause, "the certificate does not parse");
	else
		id = ari_cert_id_x509(x, cause);
	ERR_clear_error();
	X509_free(x);
	BIO_free(bio);
	return id;
}

/* ari_cert_id() of a certificate already parsed. */
char *
ari_cert_id_x509(X509 *x, char **cause)
{
	const ASN1_OCTET_STRING		*kid;
	unsigned char			*der = NULL;
	const unsigned char		*p;
	char				*a = NULL, *b = NULL, *id = NULL;
	long				 len;
	int				 n, tag, xclass;

	if ((kid = X509_get0_authority_key_id(x)) == NULL ||
	    ASN1_STRING_length(kid) <= 0) {
		xasprintf(cause, "the certificate has no authority key "
		    "identifier");
		goto out;
	}
	if ((n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &der)) <= 0) {
		xasprintf(cause, "the certificate's serial does not encode");
		goto out;
	}
	p = der;
	if (ASN1_get_object(&p, &len, &tag, &xclass, n) & 0x80 || len <= 0 ||
	    tag != V_ASN1_INTEGER || p + len != der + n) {
		xasprintf(cause, "the certificate's serial does not encode");
		goto out;
	}
	a = b64url_encode(ASN1_STRING_get0_data(kid),
	    (size_t)ASN1_STRING_length(kid));
	b = b64url_encode(p, (size_t)len);
	xasprintf(&id, "%s.%s", a, b);
	if (strlen(id) > ARI_CERT_ID_MAX) {
		xasprintf(cause, "the certificate's CertID is too long");
		free(id);
		id = NULL;
	}
out:
	ERR_clear_error();
	OPENSSL_free(der);
	free(a);
	free(b);
	return id;
}

static int
ari_digits(const char **s, int n, int *out)
{
	int	 v = 0;

	for (; n > 0; n--, (*s)++) {
		if (!isdigit((unsigned char)**s))
			return -1;
		v = v * 10 + (**s - '0');
	}
	*out = v;
	return 0;
}

/*
 * An RFC 3339 date-time, as the CA writes suggestedWindow:
 * 2025-01-02T03:04:05[.fraction](Z|+hh:mm|-hh:mm).  The fraction is
 * dropped.  0 and *t, or -1.
 */
int
ari_parse_time(const char *s, time_t *t)
{
	struct tm	 tm;
	int		 y, mo, d, h, mi, se, oh = 0, om = 0, sign = 0;
	time_t		 v;

	memset(&tm, 0, sizeof(tm));
	if (ari_digits(&s, 4, &y) == -1 || *s++ != '-' ||
	    ari_digits(&s, 2, &mo) == -1 || *s++ != '-' ||
	    ari_digits(&s, 2, &d) == -1 || (*s != 'T' && *s != 't') ||
	    (s++, ari_digits(&s, 2, &h)) == -1 || *s++ != ':' ||
	    ari_digits(&s, 2, &mi) == -1 || *s++ != ':' ||
	    ari_digits(&s, 2, &se) == -1)
		return -1;
	if (*s == '.') {
		if (!isdigit((unsigned char)*++s))
			return -1;
		while (isdigit((unsigned char)*s))
			s++;
	}
	if (*s == 'Z' || *s == 'z')
		s++;
	else if (*s == '+' || *s == '-') {
		sign = *s++ == '+' ? 1 : -1;
		if (ari_digits(&s, 2, &oh) == -1 || *s++ != ':' ||
		    ari_digits(&s, 2, &om) == -1 || oh > 23 || om > 59)
			return -1;
	} else
		return -1;
	if (*s != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
	    h > 23 || mi > 59 || se > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	if ((v = timegm(&tm)) == (time_t)-1)
		return -1;
	v -= (time_t)sign * (oh * 3600 + om * 60);
	if (v < 0 || v > ARI_TIME_MAX)
		return -1;
	*t = v;
	return 0;
}

/* A URL fit for a log line: short, printable, no spaces. */
static int
ari_printable(const char *s, size_t max)
{
	size_t	 i;

	for (i = 0; s[i] != '\0'; i++)
		if (i >= max || s[i] <= 0x20 || s[i] >= 0x7f)
			return 0;
	return i > 0;
}

/*
 * A renewalInfo answer (RFC 9773 section 4.2):
 *   {"suggestedWindow": {"start": T, "end": T}, "explanationURL": U}
 * Fills as_start, as_end and as_explanation; a window whose end is not
 * after its start is refused, as the RFC asks.  An explanationURL we
 * would not print is left out, not a reason to refuse the window.
 */
int
ari_parse(const char *body, size_t len, struct ari_state *as, char **cause)
{
	json_t		*o = NULL, *w;
	json_error_t	 jerr;
	const char	*e;
	time_t		 start, end;
	int		 rc = -1;

	if (len > ARI_MAX_BODY) {
		xasprintf(cause, "renewalInfo larger than %d bytes",
		    ARI_MAX_BODY);
		return -1;
	}
	if ((o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL || !json_is_object(o)) {
		xasprintf(cause, "renewalInfo is not a JSON object");
		goto out;
	}
	w = json_object_get(o, "suggestedWindow");
	if (!json_is_object(w) ||
	    !json_is_string(json_object_get(w, "start")) ||
	    !json_is_string(json_object_get(w, "end")) ||
	    ari_parse_time(json_string_value(json_object_get(w, "start")),
	    &start) == -1 ||
	    ari_parse_time(json_string_value(json_object_get(w, "end")),
	    &end) == -1) {
		xasprintf(cause, "renewalInfo has no valid suggestedWindow");
		goto out;
	}
	if (end <= start) {
		xasprintf(cause, "renewalInfo's suggestedWindow ends before "
		    "it starts");
		goto out;
	}
	free(as->as_explanation);
	as->as_explanation = NULL;
	e = json_string_value(json_object_get(o, "explanationURL"));
	if (e != NULL && ari_printable(e, ARI_EXPLANATION_MAX))
		as->as_explanation = xstrdup(e);
	as->as_start = start;
	as->as_end = end;
	rc = 0;
out:
	json_decref(o);
	return rc;
}

/*
 * When to ask again: the CA's Retry-After (absolute, 0 when absent),
 * clamped to ARI_RETRY_MIN..ARI_RETRY_MAX from now.  A CA that asks every
 * minute is not obeyed; one that asks once a month still gets asked
 * daily, as RFC 9773 section 4.3 wants clients to keep checking.
 */
time_t
ari_next_fetch(time_t now, time_t retry_after)
{
	time_t	 wait = retry_after > 0 ? retry_after - now : ARI_RETRY_DEFAULT;

	if (wait < ARI_RETRY_MIN)
		wait = ARI_RETRY_MIN;
	if (wait > ARI_RETRY_MAX)
		wait = ARI_RETRY_MAX;
	return now + wait;
}

/*
 * A uniformly random moment inside the window (RFC 9773 section 4.2), in
 * the part of it still ahead: a window that began before now (a CA's
 * window may even begin before the certificate's notBefore) would
 * otherwise put most picks in the past, and renewing at once every time
 * is a renewal storm, and no spreading of the load.  One in the past (the
 * whole window is) means "now" to the caller.  A window reaching past the
 * certificate's expiry is cut there: renewing after it is no renewal.
 */
time_t
ari_pick(const struct ari_state *as, time_t not_after, time_t now,
    double random_unit)
{
	time_t	 start = as->as_start, end = as->as_end;

	if (not_after > 0 && end > not_after)
		end = not_after;
	if (start < now)
		start = now;
	if (end <= start)
		return end;
	return start + (time_t)(random_unit * (double)(end - start));
}

/* STATE/ari/ID.json: times as seconds since the epoch. */
char *
ari_state_json(const struct ari_state *as)
{
	json_t	*o;
	char	*s;

	o = json_pack("{s:s, s:I, s:I, s:I, s:I}", "cert_id", as->as_cert_id,
	    "start", (json_int_t)as->as_start, "end", (json_int_t)as->as_end,
	    "renew_at", (json_int_t)as->as_renew_at,
	    "next_fetch", (json_int_t)as->as_next_fetch);
	if (o == NULL)
		fatalx("%s: json_pack", __func__);
	if (as->as_explanation != NULL)
		json_object_set_new(o, "explanation_url",
		    json_string(as->as_explanation));
	if ((s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("%s: json_dumps", __func__);
	json_decref(o);
	return s;
}

static int
ari_state_time(json_t *o, const char *key, time_t *t)
{
	json_t	*v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > (json_int_t)ARI_TIME_MAX)
		return -1;
	*t = (time_t)json_integer_value(v);
	return 0;
}

/* Only what ari_state_json() writes; anything else is refused whole. */
int
ari_state_parse(const char *text, size_t len, struct ari_state *as,
    char **cause)
{
	json_t		*o = NULL;
	json_error_t	 jerr;
	const char	*id, *e;
	struct ari_state n;
	size_t		 i;
	int		 rc = -1;

	memset(&n, 0, sizeof(n));
	if (len > ARI_MAX_BODY ||
	    (o = json_loadb(text, len, 0, &jerr)) == NULL ||
	    !json_is_object(o)) {
		xasprintf(cause, "not a JSON object");
		goto out;
	}
	id = json_string_value(json_object_get(o, "cert_id"));
	if (id == NULL || *id == '\0' || strlen(id) > ARI_CERT_ID_MAX) {
		xasprintf(cause, "no cert_id");
		goto out;
	}
	for (i = 0; id[i] != '\0'; i++)
		if (!isalnum((unsigned char)id[i]) && strchr("-_.", id[i]) ==
		    NULL) {
			xasprintf(cause, "cert_id is not base64url");
			goto out;
		}
	if (ari_state_time(o, "start", &n.as_start) == -1 ||
	    ari_state_time(o, "end", &n.as_end) == -1 ||
	    ari_state_time(o, "renew_at", &n.as_renew_at) == -1 ||
	    ari_state_time(o, "next_fetch", &n.as_next_fetch) == -1 ||
	    n.as_end < n.as_start) {
		xasprintf(cause, "bad times");
		goto out;
	}
	e = json_string_value(json_object_get(o, "explanation_url"));
	if (e != NULL && ari_printable(e, ARI_EXPLANATION_MAX))
		n.as_explanation = xstrdup(e);
	n.as_cert_id = xstrdup(id);
	ari_state_clear(as);
	*as = n;
	rc = 0;
out:
	json_decref(o);
	return rc;
}
