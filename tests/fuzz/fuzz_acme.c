/*
 * What the CA sends back (src/acme.c, src/order.c, src/store.c,
 * src/keys.c, src/http_client.c): a reply's status, headers (Location,
 * Retry-After, Content-Type, Link) and body become an acme_reply, which
 * the directory, problem, order, authorization and challenge parsers,
 * the PEM chain readers and the renewalInfo parser (ari.c) take apart.
 * The dns-01 note (store.c, STATE/dns-01/VALUE.json) is read here too:
 * outside input on the next start, like STATE/ari.
 *
 * acme.c and order.c are #included to reach their static parsers; the
 * other objects are linked as built.  The directory goes through the real
 * acme_directory_done() of an issuer that already has its key and account
 * URL, so it ends in acme_set_ready() with nothing queued and sends
 * nothing; its boot timer sits on an event base that never runs.
 *
 * Input: byte 0 picks the parser, byte 1 the HTTP status; then header
 * lines "Name: value\n" up to an empty line, then the body.  Without an
 * empty line everything after byte 1 is the body.
 */
#include "../../src/acme.c"
#include "../../src/order.c"

#include <event2/keyvalq_struct.h>

#include "fuzz.h"

enum {
	FUZZ_REPLY,		/* acme_reply_fill, problem documents */
	FUZZ_DIRECTORY,
	FUZZ_ORDER,
	FUZZ_AUTHZ,		/* authorization and its challenges */
	FUZZ_CHAIN,		/* PEM chain, key, Link headers */
	FUZZ_RENEWAL_INFO,	/* ARI: renewalInfo, its kept state */
	FUZZ_DNS_NOTE,		/* STATE/dns-01/VALUE.json */
	FUZZ_KINDS
};

static const int fuzz_statuses[] = {
	200, 201, 204, 400, 403, 404, 429, 500, 503, 0
};
#define FUZZ_NSTATUSES (sizeof(fuzz_statuses) / sizeof(fuzz_statuses[0]))

static struct acme_issuer	 fuzz_ai;
static struct conf_issuer	 fuzz_ci;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct event_base	*base;

	(void)argc;
	(void)argv;
	fuzz_quiet();
	log_init(0);
	if ((base = event_base_new()) == NULL)
		abort();
	fuzz_ci.ci_name = "fuzz";
	fuzz_ci.ci_uri = "https://127.0.0.1:9/directory";
	fuzz_ai.ai_base = base;
	fuzz_ai.ai_name = "fuzz";
	fuzz_ai.ai_conf = &fuzz_ci;
	fuzz_ai.ai_kid = "https://127.0.0.1:9/account/1";
	/* The CA has the configured contact: acme_set_ready() sends nothing. */
	fuzz_ai.ai_ca_contact = acme_contact_conf(&fuzz_ai);
	if ((fuzz_ai.ai_key = keys_generate(KEY_ECDSA_256)) == NULL)
		abort();
	TAILQ_INIT(&fuzz_ai.ai_boot_queue);
	TAILQ_INIT(&fuzz_ai.ai_queue);
	TAILQ_INIT(&fuzz_ai.ai_order_queue);
	fuzz_ai.ai_boot_ev = evtimer_new(base, acme_boot_cb, &fuzz_ai);
	if (fuzz_ai.ai_boot_ev == NULL)
		abort();
	return 0;
}

/* "Name: value" lines up to an empty line; returns where the body starts. */
static const char *
fuzz_headers(struct evkeyvalq *h, const char *p)
{
	const char	*start = p, *nl, *colon;
	char		*name, *value;

	if (strstr(p, "\n\n") == NULL)
		return start;
	while ((nl = strchr(p, '\n')) != NULL && nl != p) {
		if ((colon = memchr(p, ':', (size_t)(nl - p))) != NULL) {
			name = xstrndup(p, (size_t)(colon - p));
			colon += strspn(colon + 1, " ") + 1;
			value = xstrndup(colon, (size_t)(nl - colon));
			evhttp_add_header(h, name, value);
			free(name);
			free(value);
		}
		p = nl + 1;
	}
	return nl != NULL ? nl + 1 : p;
}

static void
fuzz_directory(struct acme_reply *r)
{
	acme_directory_done(r, &fuzz_ai);
	evtimer_del(fuzz_ai.ai_boot_ev);
	free(fuzz_ai.ai_new_nonce);
	free(fuzz_ai.ai_new_account);
	free(fuzz_ai.ai_new_order);
	free(fuzz_ai.ai_revoke_cert);
	free(fuzz_ai.ai_tos);
	fuzz_ai.ai_new_nonce = fuzz_ai.ai_new_account = NULL;
	fuzz_ai.ai_new_order = fuzz_ai.ai_revoke_cert = fuzz_ai.ai_tos = NULL;
	fuzz_ai.ai_boot_failures = 0;
}

static void
fuzz_order(struct acme_reply *r)
{
	struct cert	 ce;
	const char	*s;

	memset(&ce, 0, sizeof(ce));
	(void)order_take_new_order(&ce, r);
	if ((s = order_status(r)) != NULL)
		log_debug("%s %s", s, order_json_str(json_object_get(r->json,
		    "error"), "detail"));
	free(ce.ce_order_url);
	free(ce.ce_finalize_url);
	order_strv_free(ce.ce_authz, ce.ce_nauthz);
}

/* An authorization, for a certificate over http-01 or (odd length) dns-01. */
static void
fuzz_authz(struct acme_reply *r)
{
	struct cert	 ce;
	json_t		*c;
	const char	*token;
	char		*keyauth;

	memset(&ce, 0, sizeof(ce));
	ce.ce_challenge = r->len % 2 ? CHALLENGE_DNS_01 : CHALLENGE_HTTP_01;
	log_debug("%s %s: %s", order_json_str(json_object_get(r->json,
	    "identifier"), "value"), order_status(r) != NULL ?
	    order_status(r) : "?", order_authz_error(&ce, r->json));
	c = order_find_challenge(&ce, r->json);
	token = json_string_value(json_object_get(c, "token"));
	if (challenge_token_valid(token)) {
		keyauth = keys_key_authorization(token, "thumbprint");
		free(keyauth);
	}
}

static void
fuzz_chain(struct acme_reply *r, const struct http_response *hr)
{
	EVP_PKEY	*key;
	char		*cause = NULL, **links;
	time_t		 nb, na;

	(void)order_chain_matches(r->body, "Pebble Intermediate CA");
	(void)store_chain_dates(r->body, &nb, &na);
	if ((key = keys_from_pem(r->body, r->len, &cause)) == NULL)
		free(cause);
	EVP_PKEY_free(key);
	if ((links = http_response_links(hr, "alternate")) != NULL)
		http_links_free(links);
	if ((links = http_response_links(hr, "up")) != NULL)
		http_links_free(links);
}

/*
 * renewalInfo (RFC 9773) as order_ari_reply() reads it, and the same
 * bytes as STATE/ari/ID.json and as a certificate to take a CertID from.
 */
static void
fuzz_renewal_info(struct acme_reply *r)
{
	struct ari_state	 as;
	char			*cause = NULL, *id;

	memset(&as, 0, sizeof(as));
	if (ari_parse(r->body, r->len, &as, &cause) == 0)
		(void)ari_pick(&as, as.as_end - 1, as.as_start + 1, 0.5);
	free(cause);
	cause = NULL;
	(void)ari_next_fetch(util_now(), r->retry_after);
	if (ari_state_parse(r->body, r->len, &as, &cause) == 0) {
		id = ari_state_json(&as);
		free(id);
	}
	free(cause);
	cause = NULL;
	ari_state_clear(&as);
	if ((id = ari_cert_id(r->body, &cause)) == NULL)
		free(cause);
	free(id);
}

/*
 * A note of a dns-01 record left to remove: what it accepts goes on a
 * hook's command line, so it must be a record name and a base64url value.
 */
static void
fuzz_dns_note(const char *text, size_t len)
{
	char	*fqdn = NULL, *value = NULL, *cause = NULL;
	size_t	 i;

	if (store_dns_record_parse(text, len, &fqdn, &value, &cause) == -1) {
		free(cause);
		return;
	}
	if (strncmp(fqdn, "_acme-challenge.", 16) != 0 ||
	    fqdn[strlen(fqdn) - 1] != '.' || strlen(value) != 43 ||
	    strstr(fqdn, "..") != NULL)
		abort();
	for (i = 0; fqdn[i] != '\0'; i++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789-_.", fqdn[i]) == NULL)
			abort();
	for (i = 0; value[i] != '\0'; i++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789-_", value[i]) == NULL)
			abort();
	free(fqdn);
	free(value);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evkeyvalq	 headers;
	struct http_response	 hr;
	struct acme_reply	 r;
	char			*text, *desc;

	if (size < 2 || size > 256 * 1024)
		return 0;
	text = xstrndup((const char *)data + 2, size - 2);
	TAILQ_INIT(&headers);
	memset(&hr, 0, sizeof(hr));
	hr.hr_status = fuzz_statuses[data[1] % FUZZ_NSTATUSES];
	hr.hr_error = hr.hr_status == 0 ? "connection refused" : NULL;
	hr.hr_headers = &headers;
	hr.hr_body = fuzz_headers(&headers, text);
	/* The JSON parsers are reached only with a JSON Content-Type. */
	if (data[0] % FUZZ_KINDS != FUZZ_REPLY &&
	    data[0] % FUZZ_KINDS != FUZZ_CHAIN &&
	    data[0] % FUZZ_KINDS != FUZZ_RENEWAL_INFO &&
	    data[0] % FUZZ_KINDS != FUZZ_DNS_NOTE &&
	    evhttp_find_header(&headers, "Content-Type") == NULL)
		evhttp_add_header(&headers, "Content-Type", "application/json");
	hr.hr_len = strlen(hr.hr_body);
	acme_reply_fill(&r, &hr);

	switch (data[0] % FUZZ_KINDS) {
	case FUZZ_REPLY:
		desc = acme_reply_describe(&r);
		free(desc);
		(void)order_is_permanent(&r);
		(void)acme_problem_is(&r, "badNonce");
		break;
	case FUZZ_DIRECTORY:
		fuzz_directory(&r);
		break;
	case FUZZ_ORDER:
		fuzz_order(&r);
		break;
	case FUZZ_AUTHZ:
		fuzz_authz(&r);
		break;
	case FUZZ_CHAIN:
		fuzz_chain(&r, &hr);
		break;
	case FUZZ_RENEWAL_INFO:
		fuzz_renewal_info(&r);
		break;
	case FUZZ_DNS_NOTE:
		fuzz_dns_note((const char *)data + 2, size - 2);
		break;
	}
	json_decref(r.json);
	evhttp_clear_headers(&headers);
	free(text);
	return 0;
}
