/*
 * dns_update: publish or remove a dns-01 TXT record with an RFC 2136
 * dynamic update signed with TSIG (RFC 8945), the issuer's
 * "dns_update SERVER[:PORT] key=FILE zone=ZONE".
 *
 * ldns builds the UPDATE message (an "add" of the TXT value with a TTL of
 * 60 s, or a "delete this value": class NONE, TTL 0), signs it with the
 * key read from FILE (BIND's format, as tsig-keygen writes it and
 * nsupdate -k reads it), and parses and verifies the answer.  The message
 * goes over UDP from a non-blocking socket watched by the loop; it is
 * sent again after DNS_UPDATE_TRY_TIMEOUT seconds, DNS_UPDATE_TRIES times
 * in all.  An update that did not take is safe to send again: adding a
 * value already there, or deleting one already gone, changes nothing.
 *
 * SERVER is an IP address: the primary's name would need a resolver the
 * daemon does not trust for this.  Without zone=, SERVER itself is asked
 * for the SOA of the record's name (dns_check.c): its authoritative
 * answer names the zone; zone= skips the question.  A zone found is
 * remembered for DNS_UPDATE_ZONE_TTL seconds, for the record's "del"
 * and ready.c's propagation check, and forgotten when an update in it
 * fails (a zone cut that moved is found again at the next try).
 *
 * An answer with NOERROR counts only when its TSIG verifies with the
 * key; an error answer is taken as it is (a forged one can only fail an
 * update, which the order survives).  Updates to one server and zone run
 * one at a time, in the order asked, as dns_hook.c's hooks do; a server
 * that does not answer holds up no other.
 *
 * The key file is read again for every update, so a rotated key needs
 * no reload; conf.c reads it once at load to report a bad one there.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <ldns/ldns.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "sidecar.h"

#define DNS_UPDATE_TRY_TIMEOUT	2	/* seconds before sending again */
#define DNS_UPDATE_TRIES	3
#define DNS_UPDATE_TTL		60	/* of the TXT record, seconds */
#define DNS_UPDATE_FUDGE	300	/* TSIG's, seconds (RFC 8945 10) */
#define DNS_UPDATE_ANSWER_MAX	65535
#define DNS_UPDATE_KEY_FILE_MAX	4096	/* bytes of a key file */
#define DNS_UPDATE_ZONE_TTL	600	/* seconds a zone found is used */
#define DNS_UPDATE_ZONES_MAX	256	/* zones found, remembered */

/* What "dns_update" names: where to send, with which key, for which zone. */
struct dns_update_target {
	struct sockaddr_storage	 ut_addr;
	socklen_t		 ut_addrlen;
	char			 ut_server[INET6_ADDRSTRLEN + 8];
	char			*ut_key_file;
	char			*ut_zone;	/* with its trailing dot */
};

/* An UPDATE message sent, and what its answer must match. */
struct dns_update_req {
	ldns_pkt		*ur_pkt;	/* signed: its TSIG's MAC */
	uint8_t			*ur_wire;
	size_t			 ur_wirelen;
	struct dns_update_key	 ur_key;
	char			*ur_server;
	char			*ur_zone;
	char			*ur_fqdn;
};

struct dns_update_job {
	struct event_base	*uj_base;
	char			*uj_spec;
	char			*uj_verb;
	char			*uj_fqdn;
	char			*uj_value;
	dns_hook_cb		 uj_cb;		/* NULL once forgotten */
	void			*uj_arg;
	struct dns_update_req	*uj_req;
	struct dns_query	*uj_zone_q;	/* the SOA asked, or NULL */
	int			 uj_started;
	int			 uj_fd;
	int			 uj_tries;
	struct event		*uj_ev;
	TAILQ_ENTRY(dns_update_job) uj_entry;
};

static TAILQ_HEAD(dns_update_jobs, dns_update_job) dns_update_queue =
    TAILQ_HEAD_INITIALIZER(dns_update_queue);

/* The zone SERVER named for a record's name (without zone=). */
struct dns_update_zone {
	char			*uz_spec;
	char			*uz_fqdn;
	char			*uz_zone;
	time_t			 uz_at;
	TAILQ_ENTRY(dns_update_zone) uz_entry;
};

static TAILQ_HEAD(dns_update_zones_head, dns_update_zone) dns_update_zones =
    TAILQ_HEAD_INITIALIZER(dns_update_zones);
static size_t	dns_update_nzones;

static void	dns_update_next(void);

/*
 * TSIG algorithms ldns signs with, by their name in the key file.  Not
 * hmac-sha384: ldns (1.8.3, Debian bookworm's) misspells it in its own
 * table and fails to sign with it, leaking what it allocated.
 */
static const char *dns_update_algs[] = {
	"hmac-sha256", "hmac-sha512", NULL
};

/*
 * The key file's tokens: words, quoted strings, and the punctuation
 * "{", "}" and ";".  Comments (#, //, and C's) are skipped.  Returns 1
 * with a token in tok, 0 at the end, -1 on a token too long or an
 * unterminated string or comment.
 */
static int
dns_update_key_token(const char **pp, const char *end, char *tok,
    size_t size)
{
	const char	*p = *pp;
	size_t		 n = 0;

	for (;;) {
		while (p < end && isspace((unsigned char)*p))
			p++;
		if (p < end && (*p == '#' ||
		    (*p == '/' && p + 1 < end && p[1] == '/'))) {
			while (p < end && *p != '\n')
				p++;
			continue;
		}
		if (p + 1 < end && p[0] == '/' && p[1] == '*') {
			for (p += 2; p + 1 < end && !(p[0] == '*' &&
			    p[1] == '/'); p++)
				;
			if (p + 1 >= end)
				return -1;
			p += 2;
			continue;
		}
		break;
	}
	if (p == end)
		return 0;
	if (*p == '{' || *p == '}' || *p == ';') {
		tok[n++] = *p++;
	} else if (*p == '"') {
		for (p++; p < end && *p != '"'; p++) {
			if (*p == '\0' || *p == '\n' || n + 1 >= size)
				return -1;
			tok[n++] = *p;
		}
		if (p == end)
			return -1;
		p++;
	} else {
		for (; p < end && !isspace((unsigned char)*p) && *p != '{' &&
		    *p != '}' && *p != ';' && *p != '"'; p++) {
			if (*p == '\0' || n + 1 >= size)
				return -1;
			tok[n++] = *p;
		}
	}
	tok[n] = '\0';
	*pp = p;
	return 1;
}

/* A domain name ldns takes: labels of 1 to 63 bytes, 253 in all. */
static int
dns_update_key_name_ok(const char *s)
{
	size_t	i, label = 0, len = strlen(s);

	if (len == 0 || len > 253)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if ((!isalnum((unsigned char)s[i]) && s[i] != '-' &&
		    s[i] != '_') || ++label > 63)
			return 0;
	}
	return 1;
}

/*
 * Canonical base64 only: it decodes and encodes back to the same text.
 * ldns leaks what it allocated when it cannot decode a secret (1.8.3,
 * ldns_pkt_tsig_sign_next()), so it is never handed one it would refuse.
 */
static int
dns_update_secret_ok(const char *s)
{
	unsigned char	 bin[DNS_UPDATE_SECRET_MAX];
	char		 back[DNS_UPDATE_SECRET_MAX + 4];
	size_t		 i, len = strlen(s);
	int		 n;

	if (len == 0 || len % 4 != 0 || len > DNS_UPDATE_SECRET_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '+' &&
		    s[i] != '/' && !(s[i] == '=' && i + 2 >= len))
			return 0;
	/* EVP_DecodeBlock() counts the padding's bytes as zeroes. */
	n = EVP_DecodeBlock(bin, (const unsigned char *)s, len) -
	    (s[len - 1] == '=') - (s[len - 2] == '=');
	i = n > 0 &&
	    EVP_EncodeBlock((unsigned char *)back, bin, n) == (int)len &&
	    strcmp(back, s) == 0;
	OPENSSL_cleanse(bin, sizeof(bin));
	OPENSSL_cleanse(back, sizeof(back));
	return (int)i;
}

static int
dns_update_alg_ok(const char *s)
{
	size_t	i;

	for (i = 0; dns_update_algs[i] != NULL; i++)
		if (strcasecmp(s, dns_update_algs[i]) == 0)
			return 1;
	return 0;
}

/* Expect the token want next. */
static int
dns_update_key_expect(const char **pp, const char *end, const char *want)
{
	char	tok[8];

	return dns_update_key_token(pp, end, tok, sizeof(tok)) == 1 &&
	    strcmp(tok, want) == 0;
}

/*
 * BIND's key statement, the first one of buf:
 *	key "NAME" { algorithm ALG; secret "BASE64"; };
 * Returns 0, or -1 and why (what is wrong, never the secret).
 */
int
dns_update_key_parse(const char *buf, size_t len, struct dns_update_key *k,
    char **why)
{
	const char	*p = buf, *end = buf + len;
	char		 tok[DNS_UPDATE_SECRET_MAX + 1];
	int		 rc;

	memset(k, 0, sizeof(*k));
	if (dns_update_key_token(&p, end, tok, sizeof(tok)) != 1 ||
	    strcmp(tok, "key") != 0 ||
	    dns_update_key_token(&p, end, k->uk_name,
	    sizeof(k->uk_name)) != 1 || !dns_update_key_name_ok(k->uk_name) ||
	    !dns_update_key_expect(&p, end, "{")) {
		xasprintf(why, "no key \"NAME\" { ... } statement");
		return -1;
	}
	while ((rc = dns_update_key_token(&p, end, tok, sizeof(tok))) == 1 &&
	    strcmp(tok, "}") != 0) {
		if (strcmp(tok, "algorithm") == 0) {
			if (dns_update_key_token(&p, end, k->uk_alg,
			    sizeof(k->uk_alg)) != 1 ||
			    !dns_update_alg_ok(k->uk_alg)) {
				xasprintf(why, "key \"%s\": algorithm \"%.16s\" "
				    "is neither hmac-sha256 nor hmac-sha512",
				    k->uk_name, k->uk_alg);
				return -1;
			}
		} else if (strcmp(tok, "secret") == 0) {
			if (dns_update_key_token(&p, end, k->uk_secret,
			    sizeof(k->uk_secret)) != 1 ||
			    !dns_update_secret_ok(k->uk_secret)) {
				xasprintf(why, "key \"%s\": its secret is not "
				    "base64", k->uk_name);
				return -1;
			}
		} else {
			xasprintf(why, "key \"%s\": unknown statement \"%.40s\"",
			    k->uk_name, tok);
			return -1;
		}
		if (!dns_update_key_expect(&p, end, ";")) {
			xasprintf(why, "key \"%s\": \";\" expected",
			    k->uk_name);
			return -1;
		}
	}
	if (rc != 1) {
		xasprintf(why, "key \"%s\": \"}\" expected", k->uk_name);
		return -1;
	}
	if (k->uk_alg[0] == '\0' || k->uk_secret[0] == '\0') {
		xasprintf(why, "key \"%s\" has no %s", k->uk_name,
		    k->uk_alg[0] == '\0' ? "algorithm" : "secret");
		return -1;
	}
	return 0;
}

/* The key in file; -1 and why (naming the file) if it cannot be used. */
int
dns_update_key_load(const char *file, struct dns_update_key *k, char **why)
{
	char	*buf = NULL, *cause = NULL;
	size_t	 len = 0;
	int	 rc;

	if (conf_read_file(file, &buf, &len, &cause) == -1) {
		xasprintf(why, "TSIG key: %s", cause);
		free(cause);
		return -1;
	}
	if (len > DNS_UPDATE_KEY_FILE_MAX) {
		xasprintf(why, "TSIG key file %s: larger than %d bytes", file,
		    DNS_UPDATE_KEY_FILE_MAX);
		free(buf);
		return -1;
	}
	rc = dns_update_key_parse(buf, len, k, &cause);
	OPENSSL_cleanse(buf, len);
	free(buf);
	if (rc == -1) {
		xasprintf(why, "TSIG key file %s: %s", file, cause);
		free(cause);
	}
	return rc;
}

static void
dns_update_target_free(struct dns_update_target *t)
{
	free(t->ut_key_file);
	free(t->ut_zone);
	memset(t, 0, sizeof(*t));
}

/* "ADDR", "ADDR:PORT", "[ADDR6]" or "[ADDR6]:PORT", port 53 if none. */
static int
dns_update_server_parse(const char *s, struct dns_update_target *t)
{
	return dns_check_addr_parse(s, &t->ut_addr, &t->ut_addrlen,
	    t->ut_server, sizeof(t->ut_server));
}

/* A zone name as ldns reads it, with its trailing dot. */
static char *
dns_update_zone_parse(const char *s)
{
	char	*zone;
	size_t	 len = strlen(s);

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return NULL;
	xasprintf(&zone, "%.*s", (int)len, s);
	if (!dns_update_key_name_ok(zone)) {
		free(zone);
		return NULL;
	}
	free(zone);
	xasprintf(&zone, "%.*s.", (int)len, s);
	return zone;
}

/*
 * The directive's words, "SERVER[:PORT] key=FILE zone=ZONE" (argv, or a
 * spec split on spaces).  Returns 0, or -1 and why.
 */
static int
dns_update_target_parse(int argc, char **argv, struct dns_update_target *t,
    char **why)
{
	int	i;

	memset(t, 0, sizeof(*t));
	if (argc < 1 || dns_update_server_parse(argv[0], t) == -1) {
		xasprintf(why, "dns_update \"%s\": not an IP address, with "
		    "an optional :PORT", argc < 1 ? "" : argv[0]);
		return -1;
	}
	for (i = 1; i < argc; i++) {
		if (strncmp(argv[i], "key=", 4) == 0 && argv[i][4] == '/' &&
		    t->ut_key_file == NULL)
			t->ut_key_file = xstrdup(argv[i] + 4);
		else if (strncmp(argv[i], "zone=", 5) == 0 &&
		    t->ut_zone == NULL &&
		    (t->ut_zone = dns_update_zone_parse(argv[i] + 5)) != NULL)
			;
		else {
			xasprintf(why, "invalid parameter \"%s\" of "
			    "dns_update: key=/ABSOLUTE/FILE and zone=ZONE, "
			    "once each", argv[i]);
			dns_update_target_free(t);
			return -1;
		}
	}
	if (t->ut_key_file == NULL) {
		xasprintf(why, "dns_update %s needs key=FILE", argv[0]);
		dns_update_target_free(t);
		return -1;
	}
	return 0;
}

#define DNS_UPDATE_SPEC_WORDS	4

static int
dns_update_spec_parse(const char *spec, struct dns_update_target *t,
    char **why)
{
	char	*copy = xstrdup(spec), *argv[DNS_UPDATE_SPEC_WORDS], *w, *p;
	int	 argc = 0, rc;

	for (p = copy; (w = strsep(&p, " ")) != NULL;)
		if (*w != '\0' && argc < DNS_UPDATE_SPEC_WORDS)
			argv[argc++] = w;
	rc = dns_update_target_parse(argc, argv, t, why);
	free(copy);
	return rc;
}

/*
 * conf.c: the directive's words checked (key file read and parsed);
 * *spec is what cc and ce carry to dns_update_run().
 */
int
dns_update_conf(int argc, char **argv, char **spec, char **why)
{
	struct dns_update_target	t;
	struct dns_update_key		k;
	int				rc;

	if (dns_update_target_parse(argc, argv, &t, why) == -1)
		return -1;
	rc = dns_update_key_load(t.ut_key_file, &k, why);
	OPENSSL_cleanse(&k, sizeof(k));
	if (rc == 0)
		xasprintf(spec, "%s key=%s%s%s", t.ut_server, t.ut_key_file,
		    t.ut_zone != NULL ? " zone=" : "",
		    t.ut_zone != NULL ? t.ut_zone : "");
	dns_update_target_free(&t);
	return rc;
}

void
dns_update_req_free(struct dns_update_req *r)
{
	if (r == NULL)
		return;
	ldns_pkt_free(r->ur_pkt);
	free(r->ur_wire);
	OPENSSL_cleanse(&r->ur_key, sizeof(r->ur_key));
	free(r->ur_server);
	free(r->ur_zone);
	free(r->ur_fqdn);
	free(r);
}

/* The update section: the value added, or that one value deleted. */
static ldns_rr_list *
dns_update_rrs(const char *verb, const char *fqdn, const char *value)
{
	ldns_rr_list	*list;
	ldns_rr		*rr = NULL;
	char		*text;

	xasprintf(&text, "%s %d IN TXT \"%s\"", fqdn, DNS_UPDATE_TTL, value);
	if (ldns_rr_new_frm_str(&rr, text, 0, NULL, NULL) != LDNS_STATUS_OK) {
		free(text);
		return NULL;
	}
	free(text);
	if (strcmp(verb, "del") == 0) {
		/* RFC 2136 2.5.4: "Delete An RR From An RRset". */
		ldns_rr_set_class(rr, LDNS_RR_CLASS_NONE);
		ldns_rr_set_ttl(rr, 0);
	}
	if ((list = ldns_rr_list_new()) == NULL)
		fatalx("%s: ldns_rr_list_new", __func__);
	ldns_rr_list_push_rr(list, rr);
	return list;
}

/*
 * The signed UPDATE for "verb fqdn value" in t's zone with key k; NULL
 * and why if ldns cannot build it (a name it does not take).
 */
struct dns_update_req *
dns_update_req_new(const char *server, const char *zone,
    const struct dns_update_key *k, const char *verb, const char *fqdn,
    const char *value, char **why)
{
	struct dns_update_req	*r;
	ldns_rr_list		*rrs;
	ldns_rdf		*zone_rdf;
	ldns_status		 st;
	char			*alg;

	if ((rrs = dns_update_rrs(verb, fqdn, value)) == NULL ||
	    (zone_rdf = ldns_dname_new_frm_str(zone)) == NULL) {
		ldns_rr_list_deep_free(rrs);
		xasprintf(why, "dns_update: TXT %s is no DNS name", fqdn);
		return NULL;
	}
	r = xcalloc(1, sizeof(*r));
	r->ur_pkt = ldns_update_pkt_new(zone_rdf, LDNS_RR_CLASS_IN, NULL, rrs,
	    NULL);
	ldns_rr_list_deep_free(rrs);
	if (r->ur_pkt == NULL)
		fatalx("%s: ldns_update_pkt_new", __func__);
	ldns_pkt_set_random_id(r->ur_pkt);
	r->ur_key = *k;
	r->ur_server = xstrdup(server);
	r->ur_zone = xstrdup(zone);
	r->ur_fqdn = xstrdup(fqdn);
	xasprintf(&alg, "%s.", k->uk_alg);
	st = ldns_pkt_tsig_sign(r->ur_pkt, k->uk_name, k->uk_secret,
	    DNS_UPDATE_FUDGE, alg, NULL);
	free(alg);
	if (st != LDNS_STATUS_OK ||
	    ldns_pkt2wire(&r->ur_wire, r->ur_pkt, &r->ur_wirelen) !=
	    LDNS_STATUS_OK) {
		xasprintf(why, "dns_update: cannot sign with TSIG key %s: %s",
		    k->uk_name, ldns_get_errorstr_by_id(st));
		dns_update_req_free(r);
		return NULL;
	}
	return r;
}

/* RFC 8945 5.3's TSIG errors, by value. */
static const char *
dns_update_tsig_error(const ldns_pkt *pkt)
{
	ldns_rr		*tsig = ldns_pkt_tsig(pkt);
	ldns_rdf	*rdf;

	if (tsig == NULL || (rdf = ldns_rr_rdf(tsig, 5)) == NULL ||
	    ldns_rdf_size(rdf) != 2)
		return NULL;
	switch (ldns_rdf2native_int16(rdf)) {
	case 16:
		return "BADSIG";
	case 17:
		return "BADKEY";
	case 18:
		return "BADTIME";
	case 22:
		return "BADTRUNC";
	default:
		return NULL;
	}
}

/* The error an answer's RCODE says, in the user's words. */
static void
dns_update_rcode_why(const struct dns_update_req *r, const ldns_pkt *ans,
    char **why)
{
	ldns_pkt_rcode	 rcode = ldns_pkt_get_rcode(ans);
	const char	*tsig_err = dns_update_tsig_error(ans);
	char		*name = dns_rcode_name(rcode);

	switch (rcode) {
	case LDNS_RCODE_NOTAUTH:
		xasprintf(why, "dns_update: %s refused our TSIG key %s "
		    "(%s%s%s)", r->ur_server, r->ur_key.uk_name, name,
		    tsig_err != NULL ? ", " : "",
		    tsig_err != NULL ? tsig_err : "");
		break;
	case LDNS_RCODE_NOTZONE:
		xasprintf(why, "dns_update: %s is not a zone of %s (%s "
		    "not in it, NOTZONE)", r->ur_zone, r->ur_server,
		    r->ur_fqdn);
		break;
	case LDNS_RCODE_REFUSED:
		xasprintf(why, "dns_update: %s refused the update of %s in "
		    "zone %s (REFUSED)", r->ur_server, r->ur_fqdn, r->ur_zone);
		break;
	default:
		xasprintf(why, "dns_update: %s answered %s to the update of "
		    "%s in zone %s", r->ur_server, name, r->ur_fqdn,
		    r->ur_zone);
		break;
	}
	free(name);
}

/*
 * Whether ans's TSIG names r's key and algorithm.  Checked before
 * ldns_pkt_tsig_verify(), which (ldns 1.8.3) leaks the packet's TSIG
 * record when it does not know the algorithm.
 */
static int
dns_update_tsig_same_key(const struct dns_update_req *r, const ldns_pkt *ans)
{
	ldns_rr		*mine = ldns_pkt_tsig(r->ur_pkt);
	ldns_rr		*theirs = ldns_pkt_tsig(ans);
	ldns_rdf	*a, *b;

	if (mine == NULL || theirs == NULL ||
	    ldns_rr_rd_count(theirs) != ldns_rr_rd_count(mine) ||
	    (a = ldns_rr_rdf(mine, 0)) == NULL ||
	    (b = ldns_rr_rdf(theirs, 0)) == NULL ||
	    ldns_rdf_get_type(b) != LDNS_RDF_TYPE_DNAME ||
	    ldns_dname_compare(a, b) != 0 ||
	    ldns_rr_owner(theirs) == NULL ||
	    ldns_dname_compare(ldns_rr_owner(mine),
	    ldns_rr_owner(theirs)) != 0)
		return 0;
	return 1;
}

/*
 * Check buf, an answer from r's server: 0 if the update took (NOERROR,
 * TSIG verified), -1 and why if it failed, 1 if buf is no answer to r
 * (another message, or garbage: keep waiting).
 */
int
dns_update_answer_check(const struct dns_update_req *r, const uint8_t *buf,
    size_t len, char **why)
{
	ldns_pkt	*ans = NULL;
	ldns_rdf	*mac;
	int		 rc;

	/*
	 * The request has no OPT record, so the answer's only additional
	 * record may be its TSIG (RFC 6891 7, RFC 8945 5.2); and ldns 1.8.3
	 * leaks all but the last of several TSIG records there.
	 */
	if (len < LDNS_HEADER_SIZE || LDNS_ARCOUNT(buf) > 1 ||
	    ldns_wire2pkt(&ans, buf, len) != LDNS_STATUS_OK)
		return 1;
	if (ldns_pkt_id(ans) != ldns_pkt_id(r->ur_pkt) || !ldns_pkt_qr(ans) ||
	    ldns_pkt_get_opcode(ans) != LDNS_PACKET_UPDATE) {
		ldns_pkt_free(ans);
		return 1;
	}
	if (ldns_pkt_get_rcode(ans) != LDNS_RCODE_NOERROR) {
		dns_update_rcode_why(r, ans, why);
		rc = -1;
	} else if (!dns_update_tsig_same_key(r, ans) ||
	    (mac = ldns_rr_rdf(ldns_pkt_tsig(r->ur_pkt), 3)) == NULL ||
	    !ldns_pkt_tsig_verify(ans, buf, len, r->ur_key.uk_name,
	    r->ur_key.uk_secret, mac)) {
		xasprintf(why, "dns_update: %s answered NOERROR without a "
		    "valid TSIG of key %s: not trusted", r->ur_server,
		    r->ur_key.uk_name);
		rc = -1;
	} else
		rc = 0;
	ldns_pkt_free(ans);
	return rc;
}

static void
dns_update_zone_free(struct dns_update_zone *uz)
{
	TAILQ_REMOVE(&dns_update_zones, uz, uz_entry);
	dns_update_nzones--;
	free(uz->uz_spec);
	free(uz->uz_fqdn);
	free(uz->uz_zone);
	free(uz);
}

/* The zone found for fqdn through spec, still fresh; NULL if none. */
static struct dns_update_zone *
dns_update_zone_find(const char *spec, const char *fqdn)
{
	struct dns_update_zone	*uz, *next;
	time_t			 now = util_now();

	for (uz = TAILQ_FIRST(&dns_update_zones); uz != NULL; uz = next) {
		next = TAILQ_NEXT(uz, uz_entry);
		if (now - uz->uz_at > DNS_UPDATE_ZONE_TTL || now < uz->uz_at) {
			dns_update_zone_free(uz);
			continue;
		}
		if (strcmp(uz->uz_spec, spec) == 0 &&
		    strcasecmp(uz->uz_fqdn, fqdn) == 0)
			return uz;
	}
	return NULL;
}

static void
dns_update_zone_note(const char *spec, const char *fqdn, const char *zone)
{
	struct dns_update_zone	*uz;

	if ((uz = dns_update_zone_find(spec, fqdn)) != NULL)
		dns_update_zone_free(uz);
	if (dns_update_nzones >= DNS_UPDATE_ZONES_MAX)
		dns_update_zone_free(TAILQ_LAST(&dns_update_zones,
		    dns_update_zones_head));
	uz = xcalloc(1, sizeof(*uz));
	uz->uz_spec = xstrdup(spec);
	uz->uz_fqdn = xstrdup(fqdn);
	uz->uz_zone = xstrdup(zone);
	uz->uz_at = util_now();
	TAILQ_INSERT_HEAD(&dns_update_zones, uz, uz_entry);
	dns_update_nzones++;
}

static void
dns_update_job_free(struct dns_update_job *uj)
{
	if (uj->uj_ev != NULL)
		event_free(uj->uj_ev);
	if (uj->uj_fd != -1)
		close(uj->uj_fd);
	dns_query_free(uj->uj_zone_q);
	dns_update_req_free(uj->uj_req);
	free(uj->uj_spec);
	free(uj->uj_verb);
	free(uj->uj_fqdn);
	free(uj->uj_value);
	free(uj);
}

/* The job is over: report it; the caller starts what waited for it. */
static void
dns_update_done(struct dns_update_job *uj, int rc, const char *why)
{
	struct dns_update_zone	*uz;

	TAILQ_REMOVE(&dns_update_queue, uj, uj_entry);
	/* Maybe the zone cut moved: the next update asks again. */
	if (rc != 0 && (uz = dns_update_zone_find(uj->uj_spec,
	    uj->uj_fqdn)) != NULL)
		dns_update_zone_free(uz);
	if (uj->uj_cb != NULL)
		uj->uj_cb(rc, why, uj->uj_arg);
	else if (rc != 0)
		log_warnx("%s", why);
	dns_update_job_free(uj);
}

static void
dns_update_send(struct dns_update_job *uj)
{
	struct timeval	tv = { DNS_UPDATE_TRY_TIMEOUT, 0 };

	uj->uj_tries++;
	/* A lost datagram is what the next try is for. */
	if (send(uj->uj_fd, uj->uj_req->ur_wire, uj->uj_req->ur_wirelen,
	    0) == -1)
		log_debug("dns_update %s: send: %s", uj->uj_req->ur_server,
		    strerror(errno));
	event_add(uj->uj_ev, &tv);
}

static void
dns_update_event_cb(int fd, short ev, void *arg)
{
	struct dns_update_job	*uj = arg;
	uint8_t			*buf;
	ssize_t			 n;
	char			*why = NULL;
	int			 rc = 1;

	if (ev & EV_READ) {
		buf = xcalloc(1, DNS_UPDATE_ANSWER_MAX);
		if ((n = recv(fd, buf, DNS_UPDATE_ANSWER_MAX, 0)) > 0)
			rc = dns_update_answer_check(uj->uj_req, buf, n, &why);
		free(buf);
		if (rc == 1) {
			/* Not ours (or ICMP's refusal): wait on. */
			return;
		}
		dns_update_done(uj, rc, why);
		free(why);
		dns_update_next();
		return;
	}
	if (uj->uj_tries < DNS_UPDATE_TRIES) {
		log_info("dns_update %s %s: no answer from %s yet, sending "
		    "again", uj->uj_verb, uj->uj_fqdn, uj->uj_req->ur_server);
		dns_update_send(uj);
		return;
	}
	xasprintf(&why, "dns_update: no answer from %s in %d s",
	    uj->uj_req->ur_server, DNS_UPDATE_TRIES * DNS_UPDATE_TRY_TIMEOUT);
	dns_update_done(uj, -1, why);
	free(why);
	dns_update_next();
}

/* With t's zone known: open the socket and send the first try. */
static int
dns_update_begin(struct dns_update_job *uj, struct dns_update_target *t,
    const char *zone, char **why)
{
	struct dns_update_key	k;

	if (dns_update_key_load(t->ut_key_file, &k, why) == -1)
		return -1;
	uj->uj_req = dns_update_req_new(t->ut_server, zone, &k,
	    uj->uj_verb, uj->uj_fqdn, uj->uj_value, why);
	OPENSSL_cleanse(&k, sizeof(k));
	if (uj->uj_req == NULL)
		return -1;
	if ((uj->uj_fd = socket(t->ut_addr.ss_family,
	    SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC, 0)) == -1 ||
	    connect(uj->uj_fd, (struct sockaddr *)&t->ut_addr,
	    t->ut_addrlen) == -1) {
		xasprintf(why, "dns_update: %s: %s", t->ut_server,
		    strerror(errno));
		return -1;
	}
	if ((uj->uj_ev = event_new(uj->uj_base, uj->uj_fd,
	    EV_READ|EV_PERSIST, dns_update_event_cb, uj)) == NULL)
		fatalx("%s: event_new", __func__);
	log_info("dns_update %s %s: sending to %s (zone %s)", uj->uj_verb,
	    uj->uj_fqdn, uj->uj_req->ur_server, zone);
	dns_update_send(uj);
	return 0;
}

/* SERVER's answer to the SOA of the record's name: its zone, or why not. */
static void
dns_update_zone_cb(struct dns_query *dq, const uint8_t *ans, size_t len,
    const char *qwhy, void *arg)
{
	struct dns_update_job		*uj = arg;
	struct dns_update_target	 t;
	char				*zone = NULL, *why = NULL, *cause = NULL;
	int				 rc = -1;

	if (dns_update_spec_parse(uj->uj_spec, &t, &why) == -1)
		goto out;
	if (ans == NULL)
		xasprintf(&why, "dns_update: no answer from %s to the SOA of "
		    "%s (to find its zone): %s", t.ut_server, uj->uj_fqdn,
		    qwhy);
	else if (dns_check_soa_zone(ans, len, dns_query_id(dq), t.ut_server,
	    uj->uj_fqdn, 1, &zone, &cause) == -1)
		xasprintf(&why, "dns_update: %s", cause);
	else {
		log_info("dns_update %s %s: %s names zone %s", uj->uj_verb,
		    uj->uj_fqdn, t.ut_server, zone);
		dns_update_zone_note(uj->uj_spec, uj->uj_fqdn, zone);
		rc = dns_update_begin(uj, &t, zone, &why);
	}
	dns_update_target_free(&t);
out:
	/* Inside its own callback: libevent is done with its timer. */
	dns_query_free(uj->uj_zone_q);
	uj->uj_zone_q = NULL;
	free(zone);
	free(cause);
	if (rc == 0)
		return;
	dns_update_done(uj, -1, why);
	free(why);
	dns_update_next();
}

/*
 * Start the job: the update itself, or first the question for its
 * zone.  -1 and why if it cannot.
 */
static int
dns_update_start(struct dns_update_job *uj, char **why)
{
	struct dns_update_target	 t;
	struct dns_update_zone		*uz;
	int				 rc = 0;

	uj->uj_started = 1;
	if (dns_update_spec_parse(uj->uj_spec, &t, why) == -1)
		return -1;
	if (t.ut_zone != NULL)
		rc = dns_update_begin(uj, &t, t.ut_zone, why);
	else if ((uz = dns_update_zone_find(uj->uj_spec, uj->uj_fqdn)) != NULL)
		rc = dns_update_begin(uj, &t, uz->uz_zone, why);
	else
		uj->uj_zone_q = dns_query_start(uj->uj_base, &t.ut_addr,
		    t.ut_addrlen, t.ut_server, uj->uj_fqdn, LDNS_RR_TYPE_SOA,
		    0, dns_update_zone_cb, uj);
	dns_update_target_free(&t);
	return rc;
}

/*
 * For ready.c: where the spec sends updates, and the zone of fqdn: its
 * zone=, or the one SERVER named for it lately (NULL if neither; the
 * caller frees).  -1 if spec does not parse.
 */
int
dns_update_spec_server(const char *spec, const char *fqdn,
    struct sockaddr_storage *ss, socklen_t *sslen, char **zone)
{
	struct dns_update_target	 t;
	struct dns_update_zone		*uz;
	char				*why = NULL;

	if (dns_update_spec_parse(spec, &t, &why) == -1) {
		free(why);
		return -1;
	}
	*ss = t.ut_addr;
	*sslen = t.ut_addrlen;
	*zone = t.ut_zone != NULL ? xstrdup(t.ut_zone) : NULL;
	if (*zone == NULL && (uz = dns_update_zone_find(spec, fqdn)) != NULL)
		*zone = xstrdup(uz->uz_zone);
	dns_update_target_free(&t);
	return 0;
}

/* Whether a job asked before uj goes to the same server and zone. */
static int
dns_update_waits(const struct dns_update_job *uj)
{
	const struct dns_update_job	*before;

	for (before = TAILQ_PREV(uj, dns_update_jobs, uj_entry);
	    before != NULL;
	    before = TAILQ_PREV(before, dns_update_jobs, uj_entry))
		if (strcmp(before->uj_spec, uj->uj_spec) == 0)
			return 1;
	return 0;
}

/*
 * Start every job that waits for no other: one at a time for each
 * server and zone, so that a server that does not answer holds up only
 * its own updates.
 */
static void
dns_update_next(void)
{
	struct dns_update_job	*uj;
	char			*why = NULL;

again:
	TAILQ_FOREACH(uj, &dns_update_queue, uj_entry) {
		if (uj->uj_started || dns_update_waits(uj))
			continue;
		if (dns_update_start(uj, &why) == 0)
			continue;
		/* Its callback may change the queue: look at it afresh. */
		dns_update_done(uj, -1, why);
		free(why);
		why = NULL;
		goto again;
	}
}

static void
dns_update_next_cb(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	dns_update_next();
}

/*
 * Send "verb fqdn value" (verb "add" or "del") as spec says, after the
 * updates asked before; cb gets 0, or -1 and why, once it is over.
 * Never calls cb before returning.
 */
struct dns_update_job *
dns_update_run(struct event_base *base, const char *spec, const char *verb,
    const char *fqdn, const char *value, dns_hook_cb cb, void *arg)
{
	struct dns_update_job	*uj;

	uj = xcalloc(1, sizeof(*uj));
	uj->uj_base = base;
	uj->uj_spec = xstrdup(spec);
	uj->uj_verb = xstrdup(verb);
	uj->uj_fqdn = xstrdup(fqdn);
	uj->uj_value = xstrdup(value);
	uj->uj_cb = cb;
	uj->uj_arg = arg;
	uj->uj_fd = -1;
	TAILQ_INSERT_TAIL(&dns_update_queue, uj, uj_entry);
	/* Started from the loop: cb must not run inside this call. */
	if (event_base_once(base, -1, EV_TIMEOUT, dns_update_next_cb, NULL,
	    NULL) == -1)
		fatalx("%s: event_base_once", __func__);
	return uj;
}

/* The caller no longer wants the result; the update still goes out. */
void
dns_update_forget(struct dns_update_job *uj)
{
	if (uj != NULL)
		uj->uj_cb = NULL;
}

/* At exit: nothing queued is sent. */
void
dns_update_shutdown(void)
{
	struct dns_update_job	*uj;

	while ((uj = TAILQ_FIRST(&dns_update_queue)) != NULL) {
		TAILQ_REMOVE(&dns_update_queue, uj, uj_entry);
		if (strcmp(uj->uj_verb, "del") == 0)
			log_warnx("dns_update del %s: not sent, the daemon is "
			    "exiting: the next start removes the record",
			    uj->uj_fqdn);
		dns_update_job_free(uj);
	}
	while (!TAILQ_EMPTY(&dns_update_zones))
		dns_update_zone_free(TAILQ_FIRST(&dns_update_zones));
}
