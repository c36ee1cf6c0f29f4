/*
 * dns_update (src/dns_update.c): the two parsers of what comes from
 * outside, the TSIG key file and the server's answer to an UPDATE; and
 * dns_check.c's parsers of answers to questions (SOA, TXT, NS, A/AAAA).
 *
 * dns_update.c is #included to reach its static functions; nothing is
 * sent.  Input: byte 0 picks the parser.  Even: the rest is a key file,
 * and a key it accepts must have a name, an algorithm and a secret that
 * ldns signs with (ldns leaks what it allocated when it cannot).  Odd: the rest is the answer to a signed "add" of a
 * fixed request; with bit 1 set, its first two bytes are replaced by the
 * request's ID, so mutations get past the ID check.  An answer may only
 * succeed with a TSIG that verifies, which the fuzzer cannot forge.
 * Bit 2 set: the rest is an answer to dns_check.c's question, bits 3-4
 * pick which (SOA, TXT, NS, A; bit 5: AAAA), its ID taken from its own
 * first two bytes so that mutations reach past the ID check.
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

#define FUZZ_DNS_NAME	"_acme-challenge.www.example.test."
#define FUZZ_DNS_ZONE	"example.test."

static void
fuzz_dns_check_answer(const uint8_t *data, size_t size, int which)
{
	struct dns_check_server	*servers = NULL;
	char			**bare = NULL, *zone = NULL, *why = NULL;
	size_t			 n = 0, nbare = 0, i;
	uint16_t		 id = size >= 2 ? data[0] << 8 | data[1] : 0;
	int			 rc;

	(void)dns_check_answer_match(data, size, id, FUZZ_DNS_NAME,
	    LDNS_RR_TYPE_TXT);
	switch (which & 3) {
	case 0:
		rc = dns_check_soa_zone(data, size, id, "127.0.0.1:53",
		    FUZZ_DNS_NAME, which & 4, &zone, &why);
		if ((rc == 0) != (zone != NULL && why == NULL))
			abort();
		break;
	case 1:
		rc = dns_check_txt_judge(data, size, id, FUZZ_DNS_NAME,
		    "value", &why);
		if ((rc == 1) != (why == NULL))
			abort();
		break;
	case 2:
		rc = dns_check_ns_parse(data, size, id, "127.0.0.1:53",
		    FUZZ_DNS_ZONE, &servers, &n, &bare, &nbare, &why);
		/* At most dns_check.c's DNS_CHECK_SERVERS_MAX of each. */
		if ((rc == -1) != (why != NULL) || n > 16 || nbare > 16)
			abort();
		break;
	default:
		dns_check_addr_parse_answer(data, size, id, "ns.example.test.",
		    which & 4 ? LDNS_RR_TYPE_AAAA : LDNS_RR_TYPE_A, &servers,
		    &n);
		break;
	}
	for (i = 0; i < n; i++)
		if (servers[i].ds_shown == NULL ||
		    (servers[i].ds_addr.ss_family != AF_INET &&
		    servers[i].ds_addr.ss_family != AF_INET6))
			abort();
	dns_check_servers_free(servers, n);
	for (i = 0; i < nbare; i++)
		free(bare[i]);
	free(bare);
	free(zone);
	free(why);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 4)
		fuzz_dns_check_answer(data + 1, size - 1, data[0] >> 3);
	else if ((data[0] & 1) == 0)
		fuzz_dns_key_file(data + 1, size - 1);
	else
		fuzz_dns_answer(data + 1, size - 1, data[0] & 2);
	return 0;
}
