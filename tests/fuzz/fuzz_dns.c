/*
 * dns_update (src/dns_update.c): the two parsers of what comes from
 * outside, the TSIG key file and the server's answer to an UPDATE.
 *
 * dns_update.c is #included to reach its static functions; nothing is
 * sent.  Input: byte 0 picks the parser.  Even: the rest is a key file,
 * and a key it accepts must have a name, an algorithm and a secret that
 * ldns signs with (ldns leaks what it allocated when it cannot).  Odd: the rest is the answer to a signed "add" of a
 * fixed request; with bit 1 set, its first two bytes are replaced by the
 * request's ID, so mutations get past the ID check.  An answer may only
 * succeed with a TSIG that verifies, which the fuzzer cannot forge.
 */
#include "../../src/dns_update.c"

#include "fuzz.h"

static const struct dns_update_key fuzz_dns_key = {
	"acme-test-key", "hmac-sha256",
	"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	log_init(0);
	return 0;
}

static void
fuzz_dns_key_file(const uint8_t *data, size_t size)
{
	struct dns_update_key	 k;
	struct dns_update_req	*r;
	char			*why = NULL;

	if (dns_update_key_parse((const char *)data, size, &k, &why) == -1) {
		if (why == NULL)
			abort();
		free(why);
		return;
	}
	if (k.uk_name[0] == '\0' || !dns_update_alg_ok(k.uk_alg) ||
	    !dns_update_secret_ok(k.uk_secret))
		abort();
	/* What it accepted, ldns takes. */
	r = dns_update_req_new("127.0.0.1:53", "example.test.", &k, "add",
	    "_acme-challenge.example.test.", "value", &why);
	if (r == NULL)
		abort();
	dns_update_req_free(r);
}

static void
fuzz_dns_answer(const uint8_t *data, size_t size, int with_id)
{
	struct dns_update_req	*r;
	uint8_t			*buf;
	uint16_t		 id;
	char			*why = NULL;
	int			 rc;

	r = dns_update_req_new("127.0.0.1:53", "example.test.", &fuzz_dns_key,
	    "add", "_acme-challenge.www.example.test.", "value", &why);
	if (r == NULL)
		abort();
	buf = xcalloc(1, size + 1);
	memcpy(buf, data, size);
	if (with_id && size >= 2) {
		id = ldns_pkt_id(r->ur_pkt);
		buf[0] = id >> 8;
		buf[1] = id & 0xff;
	}
	rc = dns_update_answer_check(r, buf, size, &why);
	if (rc == 0 || (rc == -1) != (why != NULL))
		abort();
	free(why);
	free(buf);
	dns_update_req_free(r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if ((data[0] & 1) == 0)
		fuzz_dns_key_file(data + 1, size - 1);
	else
		fuzz_dns_answer(data + 1, size - 1, data[0] & 2);
	return 0;
}
