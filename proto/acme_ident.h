/*
 * acme_ident.h: what an identifier of acme_certificate is, and the id a
 * certificate gets from its identifiers and key type.  A contract like
 * acme_shm.h: the daemon (src/conf_cert.c, for its own file, nginx.conf
 * and the control API) and the nginx module (src/nginx/ngx_http_acme_conf.c)
 * both read identifiers and name certificates with these functions only.
 * The shared zone is keyed by the id (LOOKUPS in acme_shm.h), so a rule
 * written twice could drift and silently leave nginx without its
 * certificate.
 *
 * Plain C, static inline, no allocation: the caller gives the buffers.
 * Strings come with their length (nginx's are not NUL-terminated); those
 * written out are NUL-terminated.  Beyond the C library it needs only
 * inet_pton()/inet_ntop(), which both builds have.
 *
 * IDENTIFIERS
 *	A DNS name is letters, digits and hyphens, in labels of at most 63
 *	bytes, 253 in all, without a leading or trailing hyphen in a label;
 *	it is lower-cased and loses one trailing dot.  An all-numeric last
 *	label is a mistyped address, not a name.  An IP address (RFC 8738)
 *	takes inet_ntop()'s form, RFC 5952 for IPv6, which may be written
 *	in brackets.  ".example.com" stands for example.com and
 *	www.example.com (nginx-acme's reading of nginx's shorthand): the
 *	wildcard nginx reads into it cannot be validated over HTTP-01.
 *	Regular expressions ("~") are refused.
 *
 * WILDCARDS
 *	"*.example.com" (RFC 8555 7.1.3: "*" as the whole leftmost label,
 *	then a DNS name of at least two labels) is read, lower-cased, as
 *	ACME_IDENT_WILDCARD with the word filled in; the caller takes it
 *	only for a certificate validated over dns-01, the one challenge a
 *	CA accepts for it.  Any other "*" ("a.*.test", "*x.test", "www.*")
 *	is ACME_IDENT_INVALID: no CA issues for it.
 *
 * KEY TYPES
 *	ecdsa:256 (the default), ecdsa:384, ecdsa:521, rsa:2048, rsa:3072,
 *	rsa:4096; "ecdsa" and "rsa" without a size are ecdsa:256 and
 *	rsa:2048, as in nginx-acme.
 *
 * IDS
 *	The first identifier, then "_" and the key type's suffix
 *	("rsa2048", "ecdsa384", ...) unless the type is the default.  A
 *	wildcard first identifier names its certificate with "_" for "*"
 *	(lego's file names): "*.example.com" gives "_.example.com".  The id
 *	names files in state_path and shell globs would read "*"; "_" never
 *	starts a DNS identifier, so no other certificate can take the id.
 */
#ifndef ACME_IDENT_H
#define ACME_IDENT_H

#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stddef.h>
#include <string.h>

#define ACME_IDENT_DNS_MAX	253
#define ACME_IDENT_LABEL_MAX	63
#define ACME_IDENT_MAX		ACME_IDENT_DNS_MAX	/* bytes, no NUL */
#define ACME_IDENT_SUFFIX_MAX	8			/* "ecdsa384" */
#define ACME_IDENT_ID_MAX	(ACME_IDENT_MAX + 1 + ACME_IDENT_SUFFIX_MAX)

enum acme_key_type {
	ACME_KEY_ECDSA_256,
	ACME_KEY_ECDSA_384,
	ACME_KEY_ECDSA_521,
	ACME_KEY_RSA_2048,
	ACME_KEY_RSA_3072,
	ACME_KEY_RSA_4096,
	ACME_KEY_TYPE_MAX
};
#define ACME_KEY_DEFAULT	ACME_KEY_ECDSA_256

/* Which slot of an SSL_CTX a key's certificate takes. */
enum acme_key_family {
	ACME_KEY_FAMILY_EC,
	ACME_KEY_FAMILY_RSA,
	ACME_KEY_FAMILY_MAX
};

struct acme_key_desc {
	const char		*kd_name;	/* as written: "rsa:2048" */
	const char		*kd_suffix;	/* of an id: "rsa2048" */
	enum acme_key_family	 kd_family;
};

/* t must be below ACME_KEY_TYPE_MAX. */
static inline const struct acme_key_desc *
acme_key_desc(enum acme_key_type t)
{
	static const struct acme_key_desc desc[ACME_KEY_TYPE_MAX] = {
		[ACME_KEY_ECDSA_256] = { "ecdsa:256", "ecdsa256",
		    ACME_KEY_FAMILY_EC },
		[ACME_KEY_ECDSA_384] = { "ecdsa:384", "ecdsa384",
		    ACME_KEY_FAMILY_EC },
		[ACME_KEY_ECDSA_521] = { "ecdsa:521", "ecdsa521",
		    ACME_KEY_FAMILY_EC },
		[ACME_KEY_RSA_2048] = { "rsa:2048", "rsa2048",
		    ACME_KEY_FAMILY_RSA },
		[ACME_KEY_RSA_3072] = { "rsa:3072", "rsa3072",
		    ACME_KEY_FAMILY_RSA },
		[ACME_KEY_RSA_4096] = { "rsa:4096", "rsa4096",
		    ACME_KEY_FAMILY_RSA },
	};

	return &desc[t];
}

static inline int
acme_ident_word_eq(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* A key type as written (case matters), or -1. */
static inline int
acme_key_parse(const char *s, size_t len)
{
	int	 t;

	/* nginx-acme's sizeless names, with its default sizes. */
	if (acme_ident_word_eq(s, len, "ecdsa"))
		return ACME_KEY_ECDSA_256;
	if (acme_ident_word_eq(s, len, "rsa"))
		return ACME_KEY_RSA_2048;
	for (t = 0; t < ACME_KEY_TYPE_MAX; t++) {
		if (acme_ident_word_eq(s, len,
		    acme_key_desc((enum acme_key_type)t)->kd_name))
			return t;
	}
	return -1;
}

/*
 * A DNS name as the header's comment says, into out (ACME_IDENT_MAX + 1
 * bytes).  Returns its length, or -1.
 */
static inline int
acme_ident_dns(const char *raw, size_t len, char *out)
{
	size_t	 i, label = 0;
	int	 digits = 1;
	char	 c;

	if (len > 0 && raw[len - 1] == '.')
		len--;
	if (len == 0 || len > ACME_IDENT_DNS_MAX)
		return -1;
	for (i = 0; i < len; i++) {
		c = raw[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		out[i] = c;
		if (c == '.') {
			if (label == 0 || out[i - 1] == '-')
				return -1;
			label = 0;
			digits = 1;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-'))
			return -1;
		if ((c == '-' && label == 0) || ++label > ACME_IDENT_LABEL_MAX)
			return -1;
		if (c < '0' || c > '9')
			digits = 0;
	}
	if (label == 0 || out[len - 1] == '-' || digits)
		return -1;
	out[len] = '\0';
	return (int)len;
}

/*
 * An IP address in its canonical text form, into out (ACME_IDENT_MAX + 1
 * bytes, more than INET6_ADDRSTRLEN).  Returns its length, or -1.
 */
static inline int
acme_ident_ip(const char *raw, size_t len, char *out)
{
	char		 in[INET6_ADDRSTRLEN + 2];
	struct in_addr	 a4;
	struct in6_addr	 a6;

	if (len >= sizeof(in))
		return -1;
	memcpy(in, raw, len);
	in[len] = '\0';
	if (inet_pton(AF_INET, in, &a4) == 1) {
		if (inet_ntop(AF_INET, &a4, out, ACME_IDENT_MAX + 1) == NULL)
			return -1;
		return (int)strlen(out);
	}
	if (len > 2 && in[0] == '[' && in[len - 1] == ']') {
		in[len - 1] = '\0';
		memmove(in, in + 1, len - 1);
	}
	if (inet_pton(AF_INET6, in, &a6) != 1 ||
	    inet_ntop(AF_INET6, &a6, out, ACME_IDENT_MAX + 1) == NULL)
		return -1;
	return (int)strlen(out);
}

/* Whether s (NUL-terminated, normalised) is an IP identifier. */
static inline int
acme_ident_is_ip(const char *s)
{
	struct in_addr	 a4;
	struct in6_addr	 a6;

	return inet_pton(AF_INET, s, &a4) == 1 ||
	    inet_pton(AF_INET6, s, &a6) == 1;
}

/* What acme_ident_parse() read, or why it refused a word. */
enum acme_ident_status {
	ACME_IDENT_OK = 0,
	ACME_IDENT_INVALID = -1,
	ACME_IDENT_WILDCARD = -2,
	ACME_IDENT_REGEX = -3
};

/* The identifiers one word stands for: one, or two for ".name". */
struct acme_ident_words {
	int	 iw_n;
	int	 iw_len[2];
	char	 iw_word[2][ACME_IDENT_MAX + 1];
};

/* Whether s (NUL-terminated, normalised) is a wildcard identifier. */
static inline int
acme_ident_is_wildcard(const char *s)
{
	return s[0] == '*' && s[1] == '.';
}

/*
 * "*.name" (WILDCARDS above) into w: ACME_IDENT_WILDCARD, or
 * ACME_IDENT_INVALID for any other use of "*".
 */
static inline enum acme_ident_status
acme_ident_wildcard(const char *raw, size_t len, struct acme_ident_words *w)
{
	int	 n;

	if (len > 0 && raw[len - 1] == '.')
		len--;
	/* Checked before writing: the name goes 2 bytes into the word. */
	if (len < 2 || len > ACME_IDENT_DNS_MAX || raw[0] != '*' ||
	    raw[1] != '.' || memchr(raw + 2, '*', len - 2) != NULL)
		return ACME_IDENT_INVALID;
	n = acme_ident_dns(raw + 2, len - 2, w->iw_word[0] + 2);
	if (n == -1 || memchr(w->iw_word[0] + 2, '.', (size_t)n) == NULL)
		return ACME_IDENT_INVALID;
	memcpy(w->iw_word[0], "*.", 2);
	w->iw_len[0] = n + 2;
	w->iw_n = 1;
	return ACME_IDENT_WILDCARD;
}

static inline enum acme_ident_status
acme_ident_parse(const char *raw, size_t len, struct acme_ident_words *w)
{
	int	 n;

	w->iw_n = 0;
	if (len > 0 && raw[0] == '~')
		return ACME_IDENT_REGEX;
	if (memchr(raw, '*', len) != NULL)
		return acme_ident_wildcard(raw, len, w);
	if (len > 0 && raw[0] == '.') {
		n = acme_ident_dns(raw + 1, len - 1, w->iw_word[0]);
		if (n == -1 || n + 4 > ACME_IDENT_DNS_MAX)
			return ACME_IDENT_INVALID;
		w->iw_len[0] = n;
		memcpy(w->iw_word[1], "www.", 4);
		memcpy(w->iw_word[1] + 4, w->iw_word[0], (size_t)n + 1);
		w->iw_len[1] = n + 4;
		w->iw_n = 2;
		return ACME_IDENT_OK;
	}
	if ((n = acme_ident_ip(raw, len, w->iw_word[0])) == -1 &&
	    (n = acme_ident_dns(raw, len, w->iw_word[0])) == -1)
		return ACME_IDENT_INVALID;
	w->iw_len[0] = n;
	w->iw_n = 1;
	return ACME_IDENT_OK;
}

/*
 * A certificate's id from its first identifier and key type, into out
 * (ACME_IDENT_ID_MAX + 1 bytes will do).  Returns its length, or -1 when
 * it does not fit in size.
 */
static inline int
acme_ident_cert_id(const char *first, size_t len, enum acme_key_type t,
    char *out, size_t size)
{
	const char	*suffix = acme_key_desc(t)->kd_suffix;
	size_t		 slen = 0;

	if (t != ACME_KEY_DEFAULT)
		slen = 1 + strlen(suffix);
	if (len + slen + 1 > size)
		return -1;
	memcpy(out, first, len);
	if (len >= 2 && first[0] == '*' && first[1] == '.')
		out[0] = '_';
	if (slen > 0) {
		out[len] = '_';
		memcpy(out + len + 1, suffix, slen - 1);
	}
	out[len + slen] = '\0';
	return (int)(len + slen);
}

#endif /* ACME_IDENT_H */
