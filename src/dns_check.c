/*
 * dns_check: the DNS questions dns-01 asks, over the loop.
 *
 * dns_query is one question to one server: ldns builds the packet, a
 * non-blocking UDP socket watched by the loop carries it (sent again
 * after DNS_QUERY_TRY_TIMEOUT seconds, DNS_QUERY_TRIES times in all),
 * and an answer with TC set is asked again over TCP (RFC 7766).  Only a
 * datagram with our ID, QR set and our question counts as the answer.
 *
 * On top of it, two users:
 *  - the zone of a name, for dns_update without zone=: the SOA that an
 *    authoritative server puts in its answer or authority section names
 *    the zone (dns_check_soa_zone());
 *  - the propagation check (ready.c's dns-01 row): every authoritative
 *    server of the zone must answer the new TXT value, asked with RD=0.
 *    The servers are dns_check's list, or else the zone's NS set: its
 *    zone and NS records asked of the dns_update SERVER (or, with a
 *    dns_hook, of the first nameserver of /etc/resolv.conf, with RD=1),
 *    each NS name's addresses from the NS answer's glue or from that
 *    resolver, port 53.
 *
 * Every answer is outside input: the parsers below take bytes and are
 * fuzzed (tests/fuzz/fuzz_dns.c).  Names and strings from an answer are
 * shown bounded and escaped.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <ldns/ldns.h>

#include "sidecar.h"

#define DNS_QUERY_TRY_TIMEOUT	1	/* seconds before sending again */
#define DNS_QUERY_TRIES		3
#define DNS_QUERY_TCP_TIMEOUT	3	/* seconds, the whole exchange */
#define DNS_QUERY_ANSWER_MAX	65535
#define DNS_CHECK_SHOW_MAX	64	/* bytes of a TXT value shown */
#define DNS_CHECK_SERVERS_MAX	16	/* addresses checked at most */
#define DNS_CHECK_RESOLV_CONF	"/etc/resolv.conf"

enum dns_query_state {
	DNS_QUERY_UDP,		/* datagrams out, waiting */
	DNS_QUERY_TCP,		/* truncated: asking again over TCP */
	DNS_QUERY_DONE,		/* the done timer calls back */
	DNS_QUERY_STATE_MAX
};

static const char *dns_query_state_names[DNS_QUERY_STATE_MAX] = {
	"udp", "tcp", "done"
};

struct dns_query {
	struct event_base	*dq_base;
	enum dns_query_state	 dq_state;
	struct sockaddr_storage	 dq_addr;
	socklen_t		 dq_addrlen;
	char			*dq_server;	/* shown in messages */
	char			*dq_qname;
	int			 dq_qtype;
	uint16_t		 dq_id;
	uint8_t			*dq_wire;
	size_t			 dq_wirelen;
	int			 dq_fd;
	int			 dq_tries;
	int			 dq_refused;	/* ICMP said port unreachable */
	struct event		*dq_ev;		/* UDP: read and resend */
	struct bufferevent	*dq_bev;	/* TCP */
	struct event		*dq_done;
	uint8_t			*dq_ans;	/* the answer, or NULL */
	size_t			 dq_anslen;
	char			*dq_why;	/* or why there is none */
	dns_query_cb		 dq_cb;
	void			*dq_arg;
};

static void
dns_query_set_state(struct dns_query *dq, enum dns_query_state state)
{
	if (state >= DNS_QUERY_STATE_MAX)
		fatalx("%s: bad state %d", __func__, state);
	log_debug("dns query %s %d at %s: %s -> %s", dq->dq_qname,
	    dq->dq_qtype, dq->dq_server, dns_query_state_names[dq->dq_state],
	    dns_query_state_names[state]);
	dq->dq_state = state;
}

/* "ADDR", "ADDR:PORT", "[ADDR6]" or "[ADDR6]:PORT", port 53 if none. */
int
dns_check_addr_parse(const char *s, struct sockaddr_storage *ss,
    socklen_t *sslen, char *shown, size_t shownlen)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)ss;
	char			 host[INET6_ADDRSTRLEN];
	const char		*colon, *port = NULL;
	char			*end;
	size_t			 len;
	long			 num = 53;

	if (s[0] == '[') {
		if ((colon = strchr(s, ']')) == NULL)
			return -1;
		len = colon - s - 1;
		if (colon[1] == ':')
			port = colon + 2;
		else if (colon[1] != '\0')
			return -1;
		s++;
	} else if ((colon = strchr(s, ':')) != NULL) {
		len = colon - s;
		port = colon + 1;
	} else
		len = strlen(s);
	if (len == 0 || len >= sizeof(host))
		return -1;
	memcpy(host, s, len);
	host[len] = '\0';
	if (port != NULL) {
		errno = 0;
		num = strtol(port, &end, 10);
		if (!isdigit((unsigned char)*port) || *end != '\0' ||
		    errno != 0 || num < 1 || num > 65535)
			return -1;
	}
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(num);
		*sslen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(num);
		*sslen = sizeof(*sin6);
	} else
		return -1;
	snprintf(shown, shownlen, "%s%s%s:%ld", ss->ss_family == AF_INET6 ?
	    "[" : "", host, ss->ss_family == AF_INET6 ? "]" : "", num);
	return 0;
}

/* An address as dns_check_addr_parse() shows it. */
static void
dns_check_addr_show(const struct sockaddr_storage *ss, char *shown,
    size_t shownlen)
{
	const struct sockaddr_in	*sin = (const void *)ss;
	const struct sockaddr_in6	*sin6 = (const void *)ss;
	char				 host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(shown, shownlen, "[%s]:%d", host,
		    ntohs(sin6->sin6_port));
	} else {
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(shown, shownlen, "%s:%d", host, ntohs(sin->sin_port));
	}
}

/* s, at most DNS_CHECK_SHOW_MAX bytes of it, printable, in quotes. */
static char *
dns_check_show(const uint8_t *s, size_t len)
{
	char	*out, *p;
	size_t	 i, n = len > DNS_CHECK_SHOW_MAX ? DNS_CHECK_SHOW_MAX : len;

	out = p = xmalloc(n * 4 + 8);
	*p++ = '"';
	for (i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			p += sprintf(p, "\\%c", s[i]);
		else if (s[i] >= 0x20 && s[i] < 0x7f)
			*p++ = (char)s[i];
		else
			p += sprintf(p, "\\x%02x", s[i]);
	}
	*p++ = '"';
	if (n < len)
		p += sprintf(p, "...");
	*p = '\0';
	return out;
}

/* An RCODE's name ("NOTAUTH"), or "RCODE N"; caller frees. */
char *
dns_rcode_name(int rcode)
{
	ldns_lookup_table	*lt;
	char			*name;

	if ((lt = ldns_lookup_by_id(ldns_rcodes, rcode)) != NULL)
		return xstrdup(lt->name);
	xasprintf(&name, "RCODE %d", rcode);
	return name;
}

/*
 * buf parsed, if it is the answer to the question id asked: QR set, the
 * same ID, and one question, qname (any case) of qtype in class IN.
 * NULL when it is not (another message, or garbage).
 */
static ldns_pkt *
dns_check_answer_parse(const uint8_t *buf, size_t len, uint16_t id,
    const char *qname, int qtype)
{
	ldns_pkt	*pkt = NULL;
	ldns_rdf	*want = NULL;
	ldns_rr		*q;
	int		 ok;

	if (len < LDNS_HEADER_SIZE || LDNS_QDCOUNT(buf) != 1 ||
	    ldns_wire2pkt(&pkt, buf, len) != LDNS_STATUS_OK)
		return NULL;
	ok = ldns_pkt_id(pkt) == id && ldns_pkt_qr(pkt) &&
	    ldns_pkt_get_opcode(pkt) == LDNS_PACKET_QUERY &&
	    ldns_rr_list_rr_count(ldns_pkt_question(pkt)) == 1 &&
	    (want = ldns_dname_new_frm_str(qname)) != NULL;
	if (ok) {
		q = ldns_rr_list_rr(ldns_pkt_question(pkt), 0);
		ok = (int)ldns_rr_get_type(q) == qtype &&
		    ldns_rr_get_class(q) == LDNS_RR_CLASS_IN &&
		    ldns_rr_owner(q) != NULL &&
		    ldns_dname_compare(ldns_rr_owner(q), want) == 0;
	}
	ldns_rdf_deep_free(want);
	if (!ok) {
		ldns_pkt_free(pkt);
		return NULL;
	}
	return pkt;
}

/* Whether buf answers the question id asked; 2 if it does, truncated. */
int
dns_check_answer_match(const uint8_t *buf, size_t len, uint16_t id,
    const char *qname, int qtype)
{
	ldns_pkt	*pkt;
	int		 rc;

	if ((pkt = dns_check_answer_parse(buf, len, id, qname, qtype)) == NULL)
		return 0;
	rc = ldns_pkt_tc(pkt) ? 2 : 1;
	ldns_pkt_free(pkt);
	return rc;
}

/*
 * The zone of name, from server's answer to "name SOA" (RD=0): an
 * authoritative answer (AA) with an SOA whose owner is name or one of
 * its parents, in the answer section (name is the apex) or the
 * authority section (NXDOMAIN, or no SOA at name).  A resolver's
 * answer (need_aa 0) has no AA.  Returns 0 and the zone (the caller
 * frees, with its trailing dot), or -1 and why.
 */
int
dns_check_soa_zone(const uint8_t *buf, size_t len, uint16_t id,
    const char *server, const char *name, int need_aa, char **zone,
    char **why)
{
	ldns_pkt	*pkt;
	ldns_rdf	*want;
	ldns_rr_list	*sections[2];
	ldns_rr		*rr;
	ldns_pkt_rcode	 rcode;
	char		*rname;
	size_t		 s, i;

	*zone = NULL;
	if ((pkt = dns_check_answer_parse(buf, len, id, name,
	    LDNS_RR_TYPE_SOA)) == NULL) {
		xasprintf(why, "%s sent no answer to the SOA of %s", server,
		    name);
		return -1;
	}
	rcode = ldns_pkt_get_rcode(pkt);
	if ((rcode != LDNS_RCODE_NOERROR && rcode != LDNS_RCODE_NXDOMAIN) ||
	    (need_aa && !ldns_pkt_aa(pkt))) {
		rname = dns_rcode_name(rcode);
		xasprintf(why, "%s is not authoritative for %s (%s%s)",
		    server, name, rcode != LDNS_RCODE_NOERROR &&
		    rcode != LDNS_RCODE_NXDOMAIN ? "it answers " : "its answer "
		    "has no AA bit", rcode != LDNS_RCODE_NOERROR &&
		    rcode != LDNS_RCODE_NXDOMAIN ? rname : "");
		free(rname);
		ldns_pkt_free(pkt);
		return -1;
	}
	if ((want = ldns_dname_new_frm_str(name)) == NULL)
		fatalx("%s: %s", __func__, name);
	sections[0] = ldns_pkt_answer(pkt);
	sections[1] = ldns_pkt_authority(pkt);
	for (s = 0; s < 2 && *zone == NULL; s++) {
		for (i = 0; i < ldns_rr_list_rr_count(sections[s]); i++) {
			rr = ldns_rr_list_rr(sections[s], i);
			if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA ||
			    ldns_rr_owner(rr) == NULL ||
			    ldns_rdf_get_type(ldns_rr_owner(rr)) !=
			    LDNS_RDF_TYPE_DNAME ||
			    (ldns_dname_compare(ldns_rr_owner(rr), want) != 0 &&
			    !ldns_dname_is_subdomain(want, ldns_rr_owner(rr))))
				continue;
			if ((*zone = ldns_rdf2str(ldns_rr_owner(rr))) == NULL)
				fatalx("%s: ldns_rdf2str", __func__);
			break;
		}
	}
	ldns_rdf_deep_free(want);
	ldns_pkt_free(pkt);
	if (*zone == NULL) {
		xasprintf(why, "%s is not authoritative for %s (its answer "
		    "names no zone: no SOA)", server, name);
		return -1;
	}
	return 0;
}

/* One TXT record's strings, joined as the CA joins them. */
static int
dns_check_txt_is(const ldns_rr *rr, const char *value, uint8_t **text,
    size_t *textlen)
{
	ldns_rdf	*rdf;
	size_t		 i, n, len = 0;
	uint8_t		*out = NULL;

	for (i = 0; i < ldns_rr_rd_count(rr); i++) {
		rdf = ldns_rr_rdf(rr, i);
		if (ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_STR ||
		    ldns_rdf_size(rdf) < 1)
			continue;
		n = ldns_rdf_data(rdf)[0];
		if (n + 1 > ldns_rdf_size(rdf))
			continue;
		out = xreallocarray(out, len + n + 1, 1);
		memcpy(out + len, ldns_rdf_data(rdf) + 1, n);
		len += n;
	}
	*text = out;
	*textlen = len;
	return len == strlen(value) && out != NULL &&
	    memcmp(out, value, len) == 0;
}

/*
 * Judge server's answer to "name TXT" (RD=0): 1 when it is
 * authoritative and has value among name's TXT records; else 0 and what
 * it answers instead (the caller frees), for a message.
 */
int
dns_check_txt_judge(const uint8_t *buf, size_t len, uint16_t id,
    const char *name, const char *value, char **what)
{
	ldns_pkt	*pkt;
	ldns_rr_list	*ans;
	ldns_rr		*rr;
	ldns_rdf	*want;
	uint8_t		*text = NULL;
	size_t		 textlen, i, others = 0;
	char		*shown = NULL, *rname;
	int		 found = 0;

	*what = NULL;
	if ((pkt = dns_check_answer_parse(buf, len, id, name,
	    LDNS_RR_TYPE_TXT)) == NULL) {
		*what = xstrdup("no answer to our question");
		return 0;
	}
	if (ldns_pkt_get_rcode(pkt) != LDNS_RCODE_NOERROR) {
		rname = dns_rcode_name(ldns_pkt_get_rcode(pkt));
		if (ldns_pkt_get_rcode(pkt) == LDNS_RCODE_NXDOMAIN &&
		    ldns_pkt_aa(pkt))
			xasprintf(what, "no TXT for %s (NXDOMAIN)", name);
		else
			xasprintf(what, "%s", rname);
		free(rname);
		ldns_pkt_free(pkt);
		return 0;
	}
	if (!ldns_pkt_aa(pkt)) {
		*what = xstrdup("without authority (AA not set: not a server "
		    "of the zone)");
		ldns_pkt_free(pkt);
		return 0;
	}
	if ((want = ldns_dname_new_frm_str(name)) == NULL)
		fatalx("%s: %s", __func__, name);
	ans = ldns_pkt_answer(pkt);
	for (i = 0; i < ldns_rr_list_rr_count(ans) && !found; i++) {
		rr = ldns_rr_list_rr(ans, i);
		if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_TXT ||
		    ldns_rr_owner(rr) == NULL ||
		    ldns_dname_compare(ldns_rr_owner(rr), want) != 0)
			continue;
		found = dns_check_txt_is(rr, value, &text, &textlen);
		if (!found && others++ == 0)
			shown = dns_check_show(text, textlen);
		free(text);
	}
	ldns_rdf_deep_free(want);
	ldns_pkt_free(pkt);
	if (found) {
		free(shown);
		return 1;
	}
	if (others == 0)
		xasprintf(what, "no TXT for %s", name);
	else
		xasprintf(what, "TXT %s%s for %s, not %s", shown,
		    others > 1 ? " and others" : "", name, value);
	free(shown);
	return 0;
}

/* An A or AAAA record's address, port 53, appended to the list. */
static void
dns_check_addr_add(const ldns_rr *rr, const char *nsname,
    struct dns_check_server **list, size_t *n)
{
	struct dns_check_server	*ds;
	struct sockaddr_in	*sin;
	struct sockaddr_in6	*sin6;
	ldns_rdf		*rdf = ldns_rr_rdf(rr, 0);
	char			 addr[INET6_ADDRSTRLEN + 8];

	if (*n >= DNS_CHECK_SERVERS_MAX || rdf == NULL)
		return;
	*list = xreallocarray(*list, *n + 1, sizeof(**list));
	ds = &(*list)[*n];
	memset(ds, 0, sizeof(*ds));
	if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_A &&
	    ldns_rdf_size(rdf) == 4) {
		sin = (struct sockaddr_in *)&ds->ds_addr;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(53);
		memcpy(&sin->sin_addr, ldns_rdf_data(rdf), 4);
		ds->ds_addrlen = sizeof(*sin);
	} else if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_AAAA &&
	    ldns_rdf_size(rdf) == 16) {
		sin6 = (struct sockaddr_in6 *)&ds->ds_addr;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(53);
		memcpy(&sin6->sin6_addr, ldns_rdf_data(rdf), 16);
		ds->ds_addrlen = sizeof(*sin6);
	} else
		return;
	dns_check_addr_show(&ds->ds_addr, addr, sizeof(addr));
	xasprintf(&ds->ds_shown, "%s %s", nsname, addr);
	(*n)++;
}

/*
 * The addresses of nsname in section (A and AAAA owned by it), appended
 * to list; returns how many.
 */
static size_t
dns_check_addrs_of(const ldns_rr_list *section, const ldns_rdf *nsname,
    const char *shown, struct dns_check_server **list, size_t *n)
{
	ldns_rr	*rr;
	size_t	 i, before = *n;

	for (i = 0; i < ldns_rr_list_rr_count(section); i++) {
		rr = ldns_rr_list_rr(section, i);
		if ((ldns_rr_get_type(rr) == LDNS_RR_TYPE_A ||
		    ldns_rr_get_type(rr) == LDNS_RR_TYPE_AAAA) &&
		    ldns_rr_owner(rr) != NULL &&
		    ldns_dname_compare(ldns_rr_owner(rr), nsname) == 0)
			dns_check_addr_add(rr, shown, list, n);
	}
	return *n - before;
}

void
dns_check_servers_free(struct dns_check_server *list, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		free(list[i].ds_shown);
		free(list[i].ds_what);
	}
	free(list);
}

/*
 * The NS set of zone from an answer to "zone NS": each name with the
 * addresses the answer carries for it (glue), appended to *servers, and
 * each name without any to *bare (the caller asks for its A and AAAA).
 * Returns 0, or -1 and why (an error answer, or no NS at all).
 */
int
dns_check_ns_parse(const uint8_t *buf, size_t len, uint16_t id,
    const char *server, const char *zone, struct dns_check_server **servers,
    size_t *nservers, char ***bare, size_t *nbare, char **why)
{
	ldns_pkt	*pkt;
	ldns_rr_list	*ans;
	ldns_rr		*rr;
	ldns_rdf	*want, *ns;
	char		*name, *rname;
	size_t		 i, found = 0;

	if ((pkt = dns_check_answer_parse(buf, len, id, zone,
	    LDNS_RR_TYPE_NS)) == NULL) {
		xasprintf(why, "%s sent no answer to the NS of %s", server,
		    zone);
		return -1;
	}
	if (ldns_pkt_get_rcode(pkt) != LDNS_RCODE_NOERROR) {
		rname = dns_rcode_name(ldns_pkt_get_rcode(pkt));
		xasprintf(why, "%s answers %s to the NS of %s", server, rname,
		    zone);
		free(rname);
		ldns_pkt_free(pkt);
		return -1;
	}
	if ((want = ldns_dname_new_frm_str(zone)) == NULL)
		fatalx("%s: %s", __func__, zone);
	ans = ldns_pkt_answer(pkt);
	for (i = 0; i < ldns_rr_list_rr_count(ans); i++) {
		rr = ldns_rr_list_rr(ans, i);
		if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_NS ||
		    ldns_rr_owner(rr) == NULL ||
		    ldns_dname_compare(ldns_rr_owner(rr), want) != 0 ||
		    (ns = ldns_rr_rdf(rr, 0)) == NULL ||
		    ldns_rdf_get_type(ns) != LDNS_RDF_TYPE_DNAME ||
		    (name = ldns_rdf2str(ns)) == NULL)
			continue;
		found++;
		if (dns_check_addrs_of(ldns_pkt_additional(pkt), ns, name,
		    servers, nservers) == 0 && *nbare < DNS_CHECK_SERVERS_MAX) {
			*bare = xreallocarray(*bare, *nbare + 1,
			    sizeof(**bare));
			(*bare)[(*nbare)++] = name;
		} else
			free(name);
	}
	ldns_rdf_deep_free(want);
	ldns_pkt_free(pkt);
	if (found == 0) {
		xasprintf(why, "%s answers no NS for %s", server, zone);
		return -1;
	}
	return 0;
}

/* An answer to "name A" or "name AAAA": its addresses, appended. */
void
dns_check_addr_parse_answer(const uint8_t *buf, size_t len, uint16_t id,
    const char *name, int qtype, struct dns_check_server **servers,
    size_t *nservers)
{
	ldns_pkt	*pkt;
	ldns_rdf	*want;

	if ((pkt = dns_check_answer_parse(buf, len, id, name, qtype)) == NULL)
		return;
	if ((want = ldns_dname_new_frm_str(name)) == NULL)
		fatalx("%s: %s", __func__, name);
	if (ldns_pkt_get_rcode(pkt) == LDNS_RCODE_NOERROR)
		dns_check_addrs_of(ldns_pkt_answer(pkt), want, name, servers,
		    nservers);
	ldns_rdf_deep_free(want);
	ldns_pkt_free(pkt);
}

/* The query: over UDP, then TCP when truncated. */

static void	dns_query_udp_send(struct dns_query *);

static char	*dns_query_fmt(const char *, ...) PRINTFLIKE(1, 2);

/* A message, allocated (the caller frees). */
static char *
dns_query_fmt(const char *fmt, ...)
{
	va_list	 ap;
	char	*s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		fatal("%s: vasprintf", __func__);
	va_end(ap);
	return s;
}

/* It is over: the done timer calls back, outside any socket callback. */
static void
dns_query_finish(struct dns_query *dq, const uint8_t *ans, size_t len,
    char *why)
{
	struct timeval	tv = { 0, 0 };

	if (dq->dq_ev != NULL)
		event_del(dq->dq_ev);
	if (dq->dq_bev != NULL)
		bufferevent_disable(dq->dq_bev, EV_READ|EV_WRITE);
	if (ans != NULL) {
		dq->dq_ans = xmalloc(len);
		memcpy(dq->dq_ans, ans, len);
		dq->dq_anslen = len;
	}
	dq->dq_why = why;
	dns_query_set_state(dq, DNS_QUERY_DONE);
	evtimer_add(dq->dq_done, &tv);
}

static void
dns_query_done_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct dns_query	*dq = arg;

	(void)fd;
	(void)ev;
	/* The callback may free dq: nothing touches it after. */
	dq->dq_cb(dq, dq->dq_ans, dq->dq_anslen, dq->dq_why, dq->dq_arg);
}

static void
dns_query_tcp_read(struct bufferevent *bev, void *arg)
{
	struct dns_query	*dq = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);
	uint8_t			 hdr[2], *buf;
	size_t			 n;

	if (evbuffer_copyout(in, hdr, 2) != 2)
		return;
	n = (size_t)hdr[0] << 8 | hdr[1];
	if (evbuffer_get_length(in) < n + 2)
		return;
	buf = xmalloc(n + 2);
	evbuffer_remove(in, buf, n + 2);
	if (dns_check_answer_match(buf + 2, n, dq->dq_id, dq->dq_qname,
	    dq->dq_qtype) == 0) {
		free(buf);
		dns_query_finish(dq, NULL, 0, xstrdup("a TCP answer that is "
		    "not to our question"));
		return;
	}
	dns_query_finish(dq, buf + 2, n, NULL);
	free(buf);
}

static void
dns_query_tcp_event(struct bufferevent *bev, short what, void *arg)
{
	struct dns_query	*dq = arg;
	char			*why;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (what & BEV_EVENT_TIMEOUT)
		xasprintf(&why, "no TCP answer within %d s",
		    DNS_QUERY_TCP_TIMEOUT);
	else if (EVUTIL_SOCKET_ERROR() != 0)
		xasprintf(&why, "TCP: %s", evutil_socket_error_to_string(
		    EVUTIL_SOCKET_ERROR()));
	else
		why = xstrdup("TCP: the connection closed");
	dns_query_finish(dq, NULL, 0, why);
}

/* A truncated answer: the whole one over TCP. */
static void
dns_query_tcp_start(struct dns_query *dq)
{
	struct timeval	tv = { DNS_QUERY_TCP_TIMEOUT, 0 };
	uint8_t		hdr[2];

	event_del(dq->dq_ev);
	dns_query_set_state(dq, DNS_QUERY_TCP);
	if ((dq->dq_bev = bufferevent_socket_new(dq->dq_base, -1,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL)
		fatalx("%s: bufferevent_socket_new", __func__);
	bufferevent_setcb(dq->dq_bev, dns_query_tcp_read, NULL,
	    dns_query_tcp_event, dq);
	bufferevent_set_timeouts(dq->dq_bev, &tv, &tv);
	hdr[0] = dq->dq_wirelen >> 8;
	hdr[1] = dq->dq_wirelen & 0xff;
	bufferevent_write(dq->dq_bev, hdr, 2);
	bufferevent_write(dq->dq_bev, dq->dq_wire, dq->dq_wirelen);
	bufferevent_enable(dq->dq_bev, EV_READ|EV_WRITE);
	if (bufferevent_socket_connect(dq->dq_bev,
	    (struct sockaddr *)&dq->dq_addr, (int)dq->dq_addrlen) == -1)
		dns_query_finish(dq, NULL, 0, dns_query_fmt("TCP: %s",
		    strerror(errno)));
}

static void
dns_query_udp_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct dns_query	*dq = arg;
	uint8_t			*buf;
	ssize_t			 n;
	int			 m = 0;

	if (ev & EV_READ) {
		buf = xmalloc(DNS_QUERY_ANSWER_MAX);
		if ((n = recv(fd, buf, DNS_QUERY_ANSWER_MAX, 0)) > 0)
			m = dns_check_answer_match(buf, n, dq->dq_id,
			    dq->dq_qname, dq->dq_qtype);
		else if (n == -1 && errno == ECONNREFUSED)
			dq->dq_refused = 1;
		if (m == 1)
			dns_query_finish(dq, buf, n, NULL);
		else if (m == 2)
			dns_query_tcp_start(dq);
		/* Else not ours, or ICMP's refusal: wait on. */
		free(buf);
		return;
	}
	if (dq->dq_tries < DNS_QUERY_TRIES) {
		dns_query_udp_send(dq);
		return;
	}
	dns_query_finish(dq, NULL, 0, dns_query_fmt("no answer within %d s%s",
	    DNS_QUERY_TRIES * DNS_QUERY_TRY_TIMEOUT, dq->dq_refused ?
	    " (port unreachable)" : ""));
}

static void
dns_query_udp_send(struct dns_query *dq)
{
	struct timeval	tv = { DNS_QUERY_TRY_TIMEOUT, 0 };

	dq->dq_tries++;
	/* A lost datagram is what the next try is for. */
	if (send(dq->dq_fd, dq->dq_wire, dq->dq_wirelen, 0) == -1)
		log_debug("dns query %s: send to %s: %s", dq->dq_qname,
		    dq->dq_server, strerror(errno));
	event_add(dq->dq_ev, &tv);
}

/*
 * Ask server (shown as shown) for qname's qtype records, with RD set as
 * rd says; cb gets the answer's bytes (it matched the question), or NULL
 * and why.  Never calls back before returning; cb may free the query.
 */
struct dns_query *
dns_query_start(struct event_base *base, const struct sockaddr_storage *ss,
    socklen_t sslen, const char *shown, const char *qname, int qtype,
    int rd, dns_query_cb cb, void *arg)
{
	struct dns_query	*dq;
	ldns_rdf		*name;
	ldns_pkt		*pkt;

	dq = xcalloc(1, sizeof(*dq));
	dq->dq_base = base;
	dq->dq_addr = *ss;
	dq->dq_addrlen = sslen;
	dq->dq_server = xstrdup(shown);
	dq->dq_qname = xstrdup(qname);
	dq->dq_qtype = qtype;
	dq->dq_cb = cb;
	dq->dq_arg = arg;
	dq->dq_fd = -1;
	if ((dq->dq_done = evtimer_new(base, dns_query_done_cb, dq)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	if ((name = ldns_dname_new_frm_str(qname)) == NULL) {
		dns_query_finish(dq, NULL, 0, dns_query_fmt("%s is no DNS "
		    "name", qname));
		return dq;
	}
	if ((pkt = ldns_pkt_query_new(name, qtype, LDNS_RR_CLASS_IN,
	    rd ? LDNS_RD : 0)) == NULL)
		fatalx("%s: ldns_pkt_query_new", __func__);
	ldns_pkt_set_random_id(pkt);
	dq->dq_id = ldns_pkt_id(pkt);
	if (ldns_pkt2wire(&dq->dq_wire, pkt, &dq->dq_wirelen) !=
	    LDNS_STATUS_OK)
		fatalx("%s: ldns_pkt2wire", __func__);
	ldns_pkt_free(pkt);
	if ((dq->dq_fd = socket(ss->ss_family,
	    SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC, 0)) == -1 ||
	    connect(dq->dq_fd, (const struct sockaddr *)ss, sslen) == -1) {
		dns_query_finish(dq, NULL, 0, dns_query_fmt("%s",
		    strerror(errno)));
		return dq;
	}
	if ((dq->dq_ev = event_new(base, dq->dq_fd, EV_READ|EV_PERSIST,
	    dns_query_udp_cb, dq)) == NULL)
		fatalx("%s: event_new", __func__);
	dns_query_udp_send(dq);
	return dq;
}

/* Drops the query, in flight or done; its callback is not called. */
void
dns_query_free(struct dns_query *dq)
{
	if (dq == NULL)
		return;
	if (dq->dq_ev != NULL)
		event_free(dq->dq_ev);
	if (dq->dq_fd != -1)
		close(dq->dq_fd);
	if (dq->dq_bev != NULL)
		bufferevent_free(dq->dq_bev);
	event_free(dq->dq_done);
	free(dq->dq_server);
	free(dq->dq_qname);
	free(dq->dq_wire);
	free(dq->dq_ans);
	free(dq->dq_why);
	free(dq);
}

uint16_t
dns_query_id(const struct dns_query *dq)
{
	return dq->dq_id;
}

const char *
dns_query_server(const struct dns_query *dq)
{
	return dq->dq_server;
}

/* The first nameserver of /etc/resolv.conf, port 53; -1 and why. */
int
dns_check_resolver(struct sockaddr_storage *ss, socklen_t *sslen,
    char *shown, size_t shownlen, char **why)
{
	ldns_resolver		*res = NULL;
	struct sockaddr_storage	*got;
	size_t			 size = 0;

	if (ldns_resolver_new_frm_file(&res, DNS_CHECK_RESOLV_CONF) !=
	    LDNS_STATUS_OK || ldns_resolver_nameserver_count(res) == 0) {
		xasprintf(why, "%s names no nameserver", DNS_CHECK_RESOLV_CONF);
		if (res != NULL)
			ldns_resolver_deep_free(res);
		return -1;
	}
	got = ldns_rdf2native_sockaddr_storage(
	    ldns_resolver_nameservers(res)[0], 53, &size);
	ldns_resolver_deep_free(res);
	if (got == NULL || size > sizeof(*ss)) {
		free(got);
		xasprintf(why, "%s: its first nameserver is no address",
		    DNS_CHECK_RESOLV_CONF);
		return -1;
	}
	memcpy(ss, got, size);
	*sslen = (socklen_t)size;
	free(got);
	dns_check_addr_show(ss, shown, shownlen);
	return 0;
}

/*
 * The propagation check: one try of ready.c's dns-01 row.  Its steps
 * (the first ones only without a dns_check list) each wait for all of
 * their queries before the next starts.
 */

enum dns_check_state {
	DNS_CHECK_ZONE,		/* the SOA of the record's name */
	DNS_CHECK_NS,		/* the zone's NS set */
	DNS_CHECK_ADDRS,	/* addresses of NS names without glue */
	DNS_CHECK_TXT,		/* the record, from every server */
	DNS_CHECK_STATE_MAX
};

static const char *dns_check_state_names[DNS_CHECK_STATE_MAX] = {
	"zone", "ns", "addrs", "txt"
};

struct dns_check {
	struct event_base	*dc_base;
	enum dns_check_state	 dc_state;
	char			*dc_fqdn;
	char			*dc_value;
	char			*dc_zone;	/* NULL until known */
	struct sockaddr_storage	 dc_lookup;	/* asked for SOA and NS */
	socklen_t		 dc_lookuplen;
	char			 dc_lookup_shown[INET6_ADDRSTRLEN + 8];
	int			 dc_lookup_rd;	/* a resolver, not the zone's */
	struct dns_check_server	*dc_servers;
	size_t			 dc_nservers;
	char			**dc_bare;	/* NS names without glue */
	size_t			 dc_nbare;
	struct dns_query	**dc_qs;	/* of the current step */
	size_t			 dc_nqs;
	size_t			 dc_pending;
	dns_check_cb		 dc_cb;
	void			*dc_arg;
};

static void
dns_check_set_state(struct dns_check *dc, enum dns_check_state state)
{
	if (state >= DNS_CHECK_STATE_MAX)
		fatalx("%s: bad state %d", __func__, state);
	log_debug("dns check %s: %s -> %s", dc->dc_fqdn,
	    dns_check_state_names[dc->dc_state], dns_check_state_names[state]);
	dc->dc_state = state;
}

/* The step's queries freed (from one of their own callbacks, too). */
static void
dns_check_queries_free(struct dns_check *dc)
{
	size_t	i;

	for (i = 0; i < dc->dc_nqs; i++)
		dns_query_free(dc->dc_qs[i]);
	free(dc->dc_qs);
	dc->dc_qs = NULL;
	dc->dc_nqs = dc->dc_pending = 0;
}

static void
dns_check_ask(struct dns_check *dc, const struct sockaddr_storage *ss,
    socklen_t sslen, const char *shown, const char *qname, int qtype,
    int rd, dns_query_cb cb)
{
	dc->dc_qs = xreallocarray(dc->dc_qs, dc->dc_nqs + 1,
	    sizeof(*dc->dc_qs));
	dc->dc_qs[dc->dc_nqs++] = dns_query_start(dc->dc_base, ss, sslen,
	    shown, qname, qtype, rd, cb, dc);
	dc->dc_pending++;
}

/* The try is over; dc stays until the caller frees it. */
static void
dns_check_end(struct dns_check *dc, int passed, char *what)
{
	dns_check_queries_free(dc);
	dc->dc_cb(passed, what, dc->dc_arg);
}

/* Which server lags, and what it answers; NULL when none does. */
static char *
dns_check_laggard(const struct dns_check *dc)
{
	const struct dns_check_server	*ds;
	size_t				 i, lagging = 0;
	char				*what = NULL;

	for (i = 0; i < dc->dc_nservers; i++) {
		ds = &dc->dc_servers[i];
		if (ds->ds_has || lagging++ > 0)
			continue;
		xasprintf(&what, "%s lags: %s", ds->ds_shown,
		    ds->ds_what != NULL ? ds->ds_what : "no answer");
	}
	if (lagging > 1) {
		char	*more;

		xasprintf(&more, "%s (and %zu more of the %zu servers)", what,
		    lagging - 1, dc->dc_nservers);
		free(what);
		what = more;
	}
	return what;
}

static void
dns_check_txt_cb(struct dns_query *dq, const uint8_t *ans, size_t len,
    const char *why, void *arg)
{
	struct dns_check	*dc = arg;
	struct dns_check_server	*ds = NULL;
	char			*what, *answer = NULL;
	size_t			 i;

	for (i = 0; i < dc->dc_nqs; i++)
		if (dc->dc_qs[i] == dq)
			ds = &dc->dc_servers[i];
	if (ds == NULL)
		fatalx("%s: an unknown query", __func__);
	free(ds->ds_what);
	ds->ds_what = NULL;
	if (ans == NULL)
		ds->ds_what = xstrdup(why);
	else if (!(ds->ds_has = dns_check_txt_judge(ans, len,
	    dns_query_id(dq), dc->dc_fqdn, dc->dc_value, &answer))) {
		xasprintf(&ds->ds_what, "it answers %s", answer);
		free(answer);
	}
	if (--dc->dc_pending > 0)
		return;
	what = dns_check_laggard(dc);
	dns_check_end(dc, what == NULL, what);
}

static void
dns_check_txt_start(struct dns_check *dc)
{
	size_t	i;

	dns_check_queries_free(dc);
	dns_check_set_state(dc, DNS_CHECK_TXT);
	for (i = 0; i < dc->dc_nservers; i++)
		dns_check_ask(dc, &dc->dc_servers[i].ds_addr,
		    dc->dc_servers[i].ds_addrlen, dc->dc_servers[i].ds_shown,
		    dc->dc_fqdn, LDNS_RR_TYPE_TXT, 0, dns_check_txt_cb);
}

static void
dns_check_addrs_cb(struct dns_query *dq, const uint8_t *ans, size_t len,
    const char *why, void *arg)
{
	struct dns_check	*dc = arg;
	size_t			 i;

	(void)why;
	for (i = 0; i < dc->dc_nqs && ans != NULL; i++)
		if (dc->dc_qs[i] == dq)
			dns_check_addr_parse_answer(ans, len, dns_query_id(dq),
			    dc->dc_bare[i / 2], i % 2 ? LDNS_RR_TYPE_AAAA :
			    LDNS_RR_TYPE_A, &dc->dc_servers,
			    &dc->dc_nservers);
	if (--dc->dc_pending > 0)
		return;
	if (dc->dc_nservers == 0) {
		dns_check_end(dc, 0, dns_query_fmt("no address of the zone's "
		    "NS %s from the resolver %s", dc->dc_bare[0],
		    dns_query_server(dq)));
		return;
	}
	dns_check_txt_start(dc);
}

/* NS names without glue: their A and AAAA from the system's resolver. */
static void
dns_check_addrs_start(struct dns_check *dc)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	char			 shown[INET6_ADDRSTRLEN + 8], *why = NULL;
	size_t			 i;

	dns_check_queries_free(dc);
	dns_check_set_state(dc, DNS_CHECK_ADDRS);
	if (dns_check_resolver(&ss, &sslen, shown, sizeof(shown),
	    &why) == -1) {
		dns_check_end(dc, 0, dns_query_fmt("no address of the zone's "
		    "NS %s: %s", dc->dc_bare[0], why));
		free(why);
		return;
	}
	for (i = 0; i < dc->dc_nbare; i++) {
		dns_check_ask(dc, &ss, sslen, shown, dc->dc_bare[i],
		    LDNS_RR_TYPE_A, 1, dns_check_addrs_cb);
		dns_check_ask(dc, &ss, sslen, shown, dc->dc_bare[i],
		    LDNS_RR_TYPE_AAAA, 1, dns_check_addrs_cb);
	}
}

static void
dns_check_ns_cb(struct dns_query *dq, const uint8_t *ans, size_t len,
    const char *why, void *arg)
{
	struct dns_check	*dc = arg;
	char			*cause = NULL;

	if (ans == NULL) {
		dns_check_end(dc, 0, dns_query_fmt("%s, asked for the NS of "
		    "%s, gave %s", dns_query_server(dq), dc->dc_zone, why));
		return;
	}
	if (dns_check_ns_parse(ans, len, dns_query_id(dq),
	    dns_query_server(dq), dc->dc_zone, &dc->dc_servers,
	    &dc->dc_nservers, &dc->dc_bare, &dc->dc_nbare, &cause) == -1) {
		dns_check_end(dc, 0, cause);
		return;
	}
	if (dc->dc_nbare > 0)
		dns_check_addrs_start(dc);
	else
		dns_check_txt_start(dc);
}

static void
dns_check_ns_start(struct dns_check *dc)
{
	dns_check_queries_free(dc);
	dns_check_set_state(dc, DNS_CHECK_NS);
	dns_check_ask(dc, &dc->dc_lookup, dc->dc_lookuplen,
	    dc->dc_lookup_shown, dc->dc_zone, LDNS_RR_TYPE_NS,
	    dc->dc_lookup_rd, dns_check_ns_cb);
}

static void
dns_check_zone_cb(struct dns_query *dq, const uint8_t *ans, size_t len,
    const char *why, void *arg)
{
	struct dns_check	*dc = arg;
	char			*cause = NULL;

	if (ans == NULL) {
		dns_check_end(dc, 0, dns_query_fmt("%s, asked for the SOA of "
		    "%s, gave %s", dns_query_server(dq), dc->dc_fqdn, why));
		return;
	}
	if (dns_check_soa_zone(ans, len, dns_query_id(dq),
	    dns_query_server(dq), dc->dc_fqdn, !dc->dc_lookup_rd, &dc->dc_zone,
	    &cause) == -1) {
		dns_check_end(dc, 0, cause);
		return;
	}
	dns_check_ns_start(dc);
}

/* "ADDR[:PORT] ..." of dns_check, into dc's servers; -1 and why. */
static int
dns_check_list_parse(struct dns_check *dc, const char *list, char **why)
{
	char			*copy = xstrdup(list), *p, *w;
	char			 shown[INET6_ADDRSTRLEN + 8];
	struct dns_check_server	 ds;

	for (p = copy; (w = strsep(&p, " ")) != NULL;) {
		if (*w == '\0')
			continue;
		memset(&ds, 0, sizeof(ds));
		if (dns_check_addr_parse(w, &ds.ds_addr, &ds.ds_addrlen,
		    shown, sizeof(shown)) == -1) {
			xasprintf(why, "dns_check \"%s\": not an IP address",
			    w);
			free(copy);
			return -1;
		}
		ds.ds_shown = xstrdup(shown);
		dc->dc_servers = xreallocarray(dc->dc_servers,
		    dc->dc_nservers + 1, sizeof(*dc->dc_servers));
		dc->dc_servers[dc->dc_nservers++] = ds;
	}
	free(copy);
	return 0;
}

/*
 * One try: whether every server answers value for fqdn.  list is
 * dns_check's "ADDR[:PORT] ..."; NULL: the zone's NS set, asked of
 * lookup (the dns_update SERVER; NULL: resolv.conf's resolver), zone
 * the record's zone if known.  cb gets 1, or 0 and what lags (it
 * frees); never before this returns.  NULL and why if it cannot start.
 */
struct dns_check *
dns_check_start(struct event_base *base, const char *list,
    const struct sockaddr_storage *lookup, socklen_t lookuplen,
    const char *zone, const char *fqdn, const char *value, dns_check_cb cb,
    void *arg, char **why)
{
	struct dns_check	*dc;

	dc = xcalloc(1, sizeof(*dc));
	dc->dc_base = base;
	dc->dc_fqdn = xstrdup(fqdn);
	dc->dc_value = xstrdup(value);
	dc->dc_zone = zone != NULL ? xstrdup(zone) : NULL;
	dc->dc_cb = cb;
	dc->dc_arg = arg;
	if (list != NULL) {
		if (dns_check_list_parse(dc, list, why) == -1) {
			dns_check_free(dc);
			return NULL;
		}
		dns_check_txt_start(dc);
		return dc;
	}
	if (lookup != NULL) {
		dc->dc_lookup = *lookup;
		dc->dc_lookuplen = lookuplen;
		dns_check_addr_show(lookup, dc->dc_lookup_shown,
		    sizeof(dc->dc_lookup_shown));
	} else if (dns_check_resolver(&dc->dc_lookup, &dc->dc_lookuplen,
	    dc->dc_lookup_shown, sizeof(dc->dc_lookup_shown), why) == -1) {
		dns_check_free(dc);
		return NULL;
	} else
		dc->dc_lookup_rd = 1;
	if (dc->dc_zone != NULL)
		dns_check_ns_start(dc);
	else {
		dns_check_set_state(dc, DNS_CHECK_ZONE);
		dns_check_ask(dc, &dc->dc_lookup, dc->dc_lookuplen,
		    dc->dc_lookup_shown, dc->dc_fqdn, LDNS_RR_TYPE_SOA,
		    dc->dc_lookup_rd, dns_check_zone_cb);
	}
	return dc;
}

/* No callback after this. */
void
dns_check_free(struct dns_check *dc)
{
	size_t	i;

	if (dc == NULL)
		return;
	dns_check_queries_free(dc);
	dns_check_servers_free(dc->dc_servers, dc->dc_nservers);
	for (i = 0; i < dc->dc_nbare; i++)
		free(dc->dc_bare[i]);
	free(dc->dc_bare);
	free(dc->dc_fqdn);
	free(dc->dc_value);
	free(dc->dc_zone);
	free(dc);
}
