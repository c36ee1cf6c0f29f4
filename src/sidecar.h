/*
 * acme-sidecar: the daemon's one private header.
 *
 * Each section belongs to one subsystem (one .c file); every function
 * carries that subsystem's prefix.  Contracts with the outside world live
 * in proto/, not here.
 */
#ifndef SIDECAR_H
#define SIDECAR_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <jansson.h>

#include "acme_ident.h"

struct event_base;
struct evdns_base;
struct evkeyvalq;

#define SIDECAR_VERSION		"0.1.0"
#define SIDECAR_DEFAULT_CONF	"/etc/acme-sidecar/acme-sidecar.conf"

#ifndef __dead
#define __dead __attribute__((__noreturn__))
#endif
#define PRINTFLIKE(a, b) __attribute__((__format__(__printf__, a, b)))

/* log.c */
void	 log_init(int verbose);
int	 log_verbose(void);
void	 log_warn(const char *, ...) PRINTFLIKE(1, 2);
void	 log_warnx(const char *, ...) PRINTFLIKE(1, 2);
void	 log_info(const char *, ...) PRINTFLIKE(1, 2);
void	 log_debug(const char *, ...) PRINTFLIKE(1, 2);
__dead void fatal(const char *, ...) PRINTFLIKE(1, 2);
__dead void fatalx(const char *, ...) PRINTFLIKE(1, 2);
void	 log_openssl(const char *, ...) PRINTFLIKE(1, 2);

/* util.c */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
char	*util_utf8_copy(const char *);		/* caller frees */
int	 xasprintf(char **, const char *, ...) PRINTFLIKE(2, 3);
char	*b64url_encode(const void *, size_t);		/* caller frees */
int	 b64url_decode(const char *, unsigned char **, size_t *);
double	 util_random_unit(void);			/* uniform in [0, 1) */
double	 util_jitter(double, double);			/* v * (1 +- frac) */
time_t	 util_now(void);				/* wall clock */
double	 util_monotonic(void);				/* seconds, never jumps */
#define UTIL_TIME_LEN	32
void	 util_time_rfc3339(time_t, char *, size_t);
uint64_t util_hash(const char *);				/* FNV-1a */

/*
 * Key types, shared by account keys (account_key) and certificate keys
 * (acme_certificate key=): proto/acme_ident.h's, which the nginx module
 * names certificates by too.
 */
enum key_type {
	KEY_ECDSA_256 = ACME_KEY_ECDSA_256,
	KEY_ECDSA_384 = ACME_KEY_ECDSA_384,
	KEY_ECDSA_521 = ACME_KEY_ECDSA_521,
	KEY_RSA_2048 = ACME_KEY_RSA_2048,
	KEY_RSA_3072 = ACME_KEY_RSA_3072,
	KEY_RSA_4096 = ACME_KEY_RSA_4096,
	KEY_TYPE_MAX = ACME_KEY_TYPE_MAX
};
#define KEY_TYPE_DEFAULT ((enum key_type)ACME_KEY_DEFAULT)

/*
 * The configuration, as the daemon reads it once loaded (conf_load.c):
 * conf.c makes and frees the issuers and the whole, conf_cert.c the
 * certificates, conf_cluster.c the cluster.  The parser that fills them
 * is theirs alone (conf_int.h).
 */
enum challenge_type {
	CHALLENGE_HTTP_01,
	CHALLENGE_DNS_01,
	CHALLENGE_TLS_ALPN_01,
	CHALLENGE_TYPE_MAX
};
#define CHALLENGE_ISSUER	(-1)	/* cc_challenge: the issuer's */

/* dns_hook's timeout= (seconds). */
#define CONF_DNS_HOOK_TIMEOUT	30
#define CONF_DNS_HOOK_TIMEOUT_MAX 3600
/* dns_check's servers, at most. */
#define CONF_DNS_CHECK_MAX	16

/* request_timeout: how long one request to the CA may take (seconds). */
#define CONF_REQUEST_TIMEOUT_MAX 600

/* A request_rate of 0 means "off". */
#define CONF_RATE_DEFAULT	20.0	/* requests per second per issuer */
#define CONF_BURST_DEFAULT	20

struct conf_issuer {
	char			*ci_name;
	char			*ci_uri;
	char			**ci_contact;		/* "mailto:..." */
	size_t			 ci_ncontact;
	char			*ci_state_path;
	int			 ci_state_off;		/* state_path off */
	int			 ci_accept_tos;
	char			*ci_trusted_cert;	/* CA file or NULL */
	int			 ci_ssl_verify;		/* default 1 */
	/* account_key: either a file (ci_account_key_file) or a type */
	char			*ci_account_key_file;
	enum key_type		 ci_account_key_type;
	char			*ci_eab_kid;		/* external_account_key */
	unsigned char		*ci_eab_hmac;		/* decoded key */
	size_t			 ci_eab_hmac_len;
	char			*ci_preferred_chain;
	char			*ci_profile;
	int			 ci_profile_require;
	int			 ci_cn_in_csr;		/* common_name_in_csr */
	int			 ci_new_order_exclusive; /* new_order_exclusive */
	enum challenge_type	 ci_challenge;
	char			*ci_dns_hook;		/* dns_hook PROGRAM, or NULL */
	int			 ci_dns_hook_timeout;	/* seconds */
	char			*ci_dns_update;		/* its spec, or NULL */
	char			*ci_dns_check;		/* "off", servers; NULL: NS */
	double			 ci_rate;		/* r/s, 0 = off */
	unsigned int		 ci_burst;
	size_t			 ci_max_idents;		/* per certificate */
	int			 ci_request_timeout;	/* seconds */
	char			*ci_file;		/* where it was defined */
	int			 ci_line;
	char			*ci_state_file;		/* state_path's, or NULL */
	int			 ci_state_line;
	TAILQ_ENTRY(conf_issuer) ci_entry;
};
TAILQ_HEAD(conf_issuers, conf_issuer);

/*
 * Identifiers in one certificate: acme_certificate, a server{}'s
 * server_name, POST /v1/certificates.  CAs refuse larger orders (Let's
 * Encrypt: 100 names), so an issuer takes CONF_IDENTS_DEFAULT unless its
 * max_identifiers says otherwise, up to CONF_MAX_IDENTS.
 */
#define CONF_IDENTS_DEFAULT	100
#define CONF_MAX_IDENTS		1000

struct conf_cert {
	char			*cc_id;		/* unique, see conf_cert_id() */
	char			*cc_issuer;	/* issuer name */
	char			**cc_idents;	/* lower case, deduplicated */
	size_t			 cc_nidents;
	enum key_type		 cc_key;
	char			*cc_profile;	/* profile=, or NULL */
	int			 cc_challenge;	/* challenge=, or CHALLENGE_ISSUER */
	char			*cc_wild_file;	/* where its first "*." is, */
	int			 cc_wild_line;	/* or NULL (conf_check_certs()) */
	/* What its orders answer, from its issuer (conf_cert_resolve()). */
	enum challenge_type	 cc_type;
	char			*cc_dns_hook;	/* dns-01's publisher */
	int			 cc_dns_hook_timeout;
	char			*cc_dns_update;	/* or this one */
	char			*cc_dns_check;	/* its issuer's dns_check */
	int			 cc_nginx;	/* from a server{} of nginx.conf */
	int			 cc_runtime;	/* added through the API */
	char			*cc_file;
	int			 cc_line;
	TAILQ_ENTRY(conf_cert)	 cc_entry;
};
TAILQ_HEAD(conf_certs, conf_cert);

/*
 * "cluster" (conf_cluster.c): replicas sharing one state through Redis.
 * Only the sealing key derived from secret_file is kept, never the secret.
 */
#define CLUSTER_NAME_MAX	64	/* node= and prefix= */
#define CLUSTER_DB_MAX		65535
#define CLUSTER_UNIX_PATH_MAX	108	/* sun_path */
#define CLUSTER_SECRET_MIN	32	/* bytes in secret_file */
#define CLUSTER_KEY_LEN		32	/* AES-256 */
#define CLUSTER_SENTINELS_MAX	8	/* addresses in sentinel:// */
struct conf_cluster {
	char			*cl_url;	/* as written */
	char			*cl_host;	/* redis://, or NULL */
	int			 cl_port;
	char			*cl_unix;	/* unix:, or NULL */
	char			*cl_master;	/* sentinel://, or NULL */
	char			*cl_sentinel_hosts[CLUSTER_SENTINELS_MAX];
	int			 cl_sentinel_ports[CLUSTER_SENTINELS_MAX];
	int			 cl_nsentinels;
	int			 cl_db;
	char			*cl_user;	/* ACL user, or NULL */
	char			*cl_password;	/* or NULL */
	char			*cl_prefix;
	char			*cl_node;
	unsigned char		 cl_key[CLUSTER_KEY_LEN];
	int			 cl_have_key;
	char			*cl_file;
	int			 cl_line;
};

struct conf {
	struct conf_issuers	 c_issuers;
	struct conf_certs	 c_certs;
	char			*c_challenge_addr;	/* default "0.0.0.0" */
	int			 c_challenge_port;	/* default 80 */
	int			 c_challenge_off;	/* challenge_listen off */
	char			*c_alpn_addr;		/* tls_alpn_listen; NULL: off */
	int			 c_alpn_port;
	/*
	 * Where the readiness check (ready.c) fetches challenges:
	 * challenge_check, else nginx.conf's first port-80 listen, else
	 * challenge_listen's; c_check_from says which, for the log.
	 */
	char			*c_check_addr;	/* NULL: none found yet */
	int			 c_check_port;
	int			 c_check_set;	/* by challenge_check */
	int			 c_check_off;	/* challenge_check off */
	int			 c_check_plain;	/* from a listen not on 80 */
	int			 c_check_limit;	/* seconds, timeout= */
	char			*c_check_from;
	/*
	 * Where the CA's tls-alpn-01 handshake arrives without
	 * tls_alpn_listen: nginx.conf's first "listen ... ssl" on port 443,
	 * else its first ssl listen.  NULL: none (port 443 of this host).
	 */
	char			*c_tls_check_addr;
	int			 c_tls_check_port;
	char			*c_tls_check_from;
	char			*c_control_socket;
	char			*c_control_group;	/* group=, or NULL */
	char			*c_user;
	char			*c_group;
	char			*c_nginx_config;	/* nginx.conf read, or NULL */
	char			*c_nginx_group;		/* its "user"'s group */
	char			*c_nginx_user;		/* its workers' user */
	const char		*c_nginx_user_from;	/* "user" or default */
	char			*c_zone_name;		/* acme_shared_zone */
	size_t			 c_zone_size;
	char			*c_zone_path;		/* "/dev/shm/NAME" */
	char			*c_zone_group;		/* group=, or NULL */
	char			*c_zone_owner;		/* owner=, or NULL */
	struct conf_cluster	*c_cluster;		/* or NULL */
	char			*c_file;		/* NULL: nginx.conf only */
};

/*
 * conf_load.c: the sidecar's file (NULL: defaults only), then the
 * nginx.conf given (NULL: the one nginx_config names, if any).  cause:
 * "FILE:LINE: msg".
 */
struct conf	*conf_load_files(const char *, const char *, char **);
struct conf	*conf_load(const char *, char **);	/* no --nginx-conf */

/* conf.c: the sidecar's directives, and the struct conf they fill. */
void		 conf_free(struct conf *);
struct conf_issuer *conf_issuer_dup(const struct conf_issuer *);
const char	*conf_volatile_dir(void);	/* state_path off's, or NULL */
void		 conf_issuer_free(struct conf_issuer *);
gid_t		 conf_gid(const char *);	/* group=1234, or (gid_t)-1 */

/* conf_parse.c: nginx's grammar, and the helpers its users share. */
struct conf_issuer *conf_find_issuer(struct conf *, const char *);
int		 conf_number(const char *, long long min, long long max,
		    long long *);

/* conf_lex.c: a whole regular file, NUL terminated, of bounded size. */
int		 conf_read_file(const char *, char **, size_t *, char **);

/*
 * conf_cert.c: identifiers and challenge types, and certificates added at
 * run time (STATE_PATH/CONF_RUNTIME_FILE).
 */
int		 conf_ident_is_ip(const char *);	/* RFC 8738 */
void		 conf_cert_free(struct conf_cert *);
const char	*conf_challenge_name(enum challenge_type);
int		 conf_cert_check_challenge(const struct conf *,
		    const struct conf_cert *,
		    const struct conf_issuer *, char **);
#define CONF_RUNTIME_FILE	"certificates.conf"
enum {
	CONF_ADD_OK,
	CONF_ADD_INVALID,	/* the configuration would refuse it */
	CONF_ADD_DUPLICATE	/* its id is taken */
};
char		*conf_runtime_path(const struct conf_issuer *);
int		 conf_runtime_add(struct conf *, const char *issuer,
		    char *const *idents, size_t, const char *key,
		    const char *profile, const char *challenge, char **);
char		*conf_runtime_text(struct conf *, const struct conf_issuer *);
void		 conf_runtime_renumber(struct conf *,
		    const struct conf_issuer *);

/* conf_cluster.c: the "cluster" directive's struct conf_cluster. */
void		 conf_cluster_free(struct conf_cluster *);

/*
 * cluster_seal.c: AES-256-GCM for what reaches Redis.  A sealed value is
 * "s1.KEYID.BASE64URL(nonce | ciphertext | tag)", bound by the GCM
 * associated data to the name it is stored under, so a value copied to
 * another key does not open.  KEYID tells "another secret_file" from
 * "damaged".
 */
#define CLUSTER_KEY_ID_LEN	16	/* hex digits */
int		 cluster_seal_derive(const char *secret, size_t,
		    unsigned char key[CLUSTER_KEY_LEN]);
void		 cluster_seal_key_id(const unsigned char key[CLUSTER_KEY_LEN],
		    char id[CLUSTER_KEY_ID_LEN + 1]);
char		*cluster_seal(const unsigned char key[CLUSTER_KEY_LEN],
		    const char *name, const void *, size_t);	/* caller frees */
int		 cluster_unseal(const unsigned char key[CLUSTER_KEY_LEN],
		    const char *name, const char *sealed, unsigned char **,
		    size_t *, char **cause);	/* wipe and free the result */

/*
 * cluster.c: the link to Redis (hiredis on the loop), membership and
 * status.  Keys are PREFIX:KIND[:NAME] (cluster_keyname()); the README's
 * "Several replicas" has the data model.
 */
#define CLUSTER_CMD_TIMEOUT	5	/* seconds: no answer drops the link */
#define CLUSTER_BACKOFF_MIN	1	/* seconds between reconnects ... */
#define CLUSTER_BACKOFF_MAX	30	/* ... doubling up to this */
#define CLUSTER_HEARTBEAT	2	/* seconds between heartbeats */
#define CLUSTER_MEMBER_TTL	6	/* seconds a heartbeat counts */
#define CLUSTER_MESSAGE_MAX	1024	/* bytes of a pub/sub message */
#define CLUSTER_MAX_ARGS	16	/* cluster_command() */
#define CLUSTER_FLUSH_WAIT	2	/* seconds at exit for the last replies */
/* Back from a drop: wait this long, at most, for the nodes seen before. */
#define CLUSTER_SETTLE_MAX	(CLUSTER_BACKOFF_MAX * 6 / 5 + \
				    2 * CLUSTER_HEARTBEAT)

struct redisReply;
struct cluster_cmd;
typedef void	(*cluster_reply_cb)(const struct redisReply *, void *);
struct cluster_hooks {
	void	(*ch_up)(void);			/* connected, or back */
	void	(*ch_down)(void);		/* the link dropped */
	void	(*ch_message)(const char *);	/* on PREFIX:events */
	void	(*ch_tick)(void);		/* each second while up */
};
struct cluster_status {
	int		 cs_enabled;
	int		 cs_connected;
	const char	*cs_state;
	const char	*cs_node;
	const char	*cs_url;
	const char	*cs_prefix;
	char *const	*cs_members;		/* live, from the last heartbeat */
	size_t		 cs_nmembers;
	int		 cs_secret_ok;		/* -1 not known yet */
	size_t		 cs_leases;		/* held by this node */
	uint64_t	 cs_connects;
	uint64_t	 cs_drops;
	size_t		 cs_inflight;
	const char	*cs_last_error;		/* or NULL */
	time_t		 cs_last_error_at;
};
int		 cluster_start(struct event_base *, struct evdns_base *,
		    const struct conf_cluster *, const struct cluster_hooks *);
void		 cluster_stop(void);
int		 cluster_enabled(void);
int		 cluster_up(void);
const char	*cluster_node(void);
const unsigned char *cluster_key(void);
char		*cluster_keyname(const char *kind, const char *name);
const char	*cluster_keyname_prefix(void);
struct cluster_cmd *cluster_command(cluster_reply_cb, void *,
		    const char *, ...) __attribute__((__sentinel__));
struct cluster_cmd *cluster_command_argv(cluster_reply_cb, void *, int,
		    const char **, const size_t *);
void		 cluster_cancel(struct cluster_cmd *);
int		 cluster_reply_failed(const struct redisReply *, const char *);
size_t		 cluster_members(char *const **);
time_t		 cluster_settle_until(void);
void		 cluster_secret_verdict(int);
void		 cluster_link_status(struct cluster_status *);

/*
 * cluster_sync.c: leases with fencing tokens, fenced writes of
 * certificates and orders, challenge tokens every replica acknowledges.
 */
#define CLUSTER_LEASE_TTL	15	/* seconds a lease lasts ... */
#define CLUSTER_LEASE_RENEW	5	/* ... renewed this often */
#define CLUSTER_TOKEN_TTL	600	/* seconds a shared token lives */
#define CLUSTER_TOKEN_WAIT	5	/* seconds to wait for every ack */
#define CLUSTER_TOKEN_POLL_MS	100

enum cluster_lease_event {
	LEASE_GRANTED,
	LEASE_BUSY,		/* another node holds it */
	LEASE_UNAVAILABLE,	/* Redis did not answer, or refused */
	LEASE_LOST		/* a held lease is another node's now */
};
struct cluster_lease;
struct cluster_op;
struct cluster_token;
struct cluster_rec;
struct ari_state;
typedef void	(*cluster_lease_cb)(enum cluster_lease_event, void *);
typedef void	(*cluster_put_cb)(int rc, void *);	/* 1, 0 stale, -1 */
typedef void	(*cluster_state_cb)(int rc, struct cluster_rec *order,
		    struct cluster_rec *cert, struct ari_state *ari, void *);
typedef void	(*cluster_token_cb)(int all, void *);
struct cluster_sync_hooks {
	void	(*sh_up)(void);			/* reconcile everything */
	void	(*sh_cert)(const char *id);	/* another node stored it */
	void	(*sh_runtime)(void);		/* API-added set changed */
};
void		 cluster_sync_start(struct event_base *, struct evdns_base *,
		    const struct conf_cluster *,
		    const struct cluster_sync_hooks *);
void		 cluster_sync_stop(void);
const char	*cluster_lease_refusal(void);
struct cluster_lease *cluster_lease_take(const char *id, cluster_lease_cb,
		    void *);
int		 cluster_lease_held(const struct cluster_lease *);
uint64_t	 cluster_lease_fence(const struct cluster_lease *);
void		 cluster_lease_release(struct cluster_lease *);
size_t		 cluster_lease_count(void);
struct cluster_op *cluster_put_cert(struct cluster_lease *,
		    const struct cluster_rec *, cluster_put_cb, void *);
struct cluster_op *cluster_put_order(struct cluster_lease *,
		    const struct cluster_rec *, cluster_put_cb, void *);
struct cluster_op *cluster_put_ari(struct cluster_lease *,
		    const struct ari_state *, cluster_put_cb, void *);
struct cluster_op *cluster_get_state(const char *id, cluster_state_cb,
		    void *);
void		 cluster_op_cancel(struct cluster_op *);
struct cluster_token *cluster_token_share(const char *token,
		    const char *keyauth, cluster_token_cb, void *);
void		 cluster_token_drop(struct cluster_token *);
void		 cluster_get_status(struct cluster_status *);

/* cluster_account.c: the fleet's ACME account per issuer. */
struct cluster_account_op;
typedef void	(*cluster_account_cb)(int rc, struct cluster_rec *, void *);
struct cluster_account_op *cluster_account_get(const char *issuer,
		    cluster_account_cb, void *);
struct cluster_account_op *cluster_account_put(const char *issuer,
		    const char *uri, const char *url, EVP_PKEY *,
		    cluster_put_cb, void *);
void		 cluster_account_cancel(struct cluster_account_op *);

/* cluster_runtime.c: certificates added through the API, fleet-wide. */
struct cluster_runtime {
	char		*cr_id;
	char		*cr_issuer;
	char		**cr_idents;
	size_t		 cr_nidents;
	char		*cr_key;		/* key type, as in key= */
	char		*cr_profile;		/* profile=, or NULL */
	char		*cr_challenge;		/* challenge=, or NULL */
	int		 cr_deleted;		/* only cr_id is set */
};
typedef void	(*cluster_runtime_cb)(const struct cluster_runtime *,
		    size_t, void *);
void		 cluster_runtime_put(const struct conf_cert *);
void		 cluster_runtime_del(const char *id);
void		 cluster_runtime_resend(void);
void		 cluster_runtime_forget(void);
int		 cluster_runtime_pending(const char *id);
void		 cluster_runtime_fetch(cluster_runtime_cb, void *);
int		 cluster_runtime_parse(const char *id, const char *, size_t,
		    struct cluster_runtime *, char **);
void		 cluster_runtime_clear(struct cluster_runtime *);

/*
 * cluster_record.c: the values kept in Redis, built and checked.  A value
 * is used only once it parsed whole and its sealed key opened.
 */
struct cluster_rec {
	char		*cr_id;
	char		*cr_issuer;	/* account: the directory URI */
	char		*cr_url;	/* order or account URL */
	char		**cr_idents;
	size_t		 cr_nidents;
	enum key_type	 cr_key_type;
	char		*cr_chain;
	EVP_PKEY	*cr_key;
	time_t		 cr_not_before;
	time_t		 cr_not_after;
	time_t		 cr_renew_at;
	uint64_t	 cr_fence;
	char		*cr_node;	/* who wrote it */
};
void		 cluster_rec_clear(struct cluster_rec *);
char		*cluster_rec_cert_json(const char *name,
		    const struct cluster_rec *);
char		*cluster_rec_order_json(const char *name,
		    const struct cluster_rec *);
char		*cluster_rec_account_json(const char *name, const char *uri,
		    const char *url, EVP_PKEY *);
int		 cluster_rec_cert_parse(const char *name, const char *id,
		    const char *, size_t, struct cluster_rec *, char **);
int		 cluster_rec_order_parse(const char *name, const char *id,
		    const char *, size_t, struct cluster_rec *, char **);
int		 cluster_rec_account_parse(const char *name, const char *,
		    size_t, struct cluster_rec *, char **);
int		 cluster_rec_keyauth_ok(const char *token, const char *,
		    size_t);
char		*cluster_rec_ari_json(const char *id, const struct ari_state *,
		    uint64_t fence);
int		 cluster_rec_ari_parse(const char *id, const char *, size_t,
		    struct ari_state *, char **);

/* keys.c: key types, keys, JWK, CSR, key authorization. */
const char	*key_type_name(enum key_type);		/* "ecdsa:256" */
const char	*key_type_suffix(enum key_type);	/* "rsa2048" */
int		 key_type_parse(const char *, enum key_type *);
EVP_PKEY	*keys_generate(enum key_type);
EVP_PKEY	*keys_from_pem(const char *, size_t, char **);
EVP_PKEY	*keys_load_file(const char *, char **);
char		*keys_to_pem(EVP_PKEY *);		/* PKCS#8 */
void		 keys_pem_free(char *);			/* wipes, then frees */
char		*keys_cert_pem(X509 *);
json_t		*keys_jwk(EVP_PKEY *);			/* public JWK */
char		*keys_thumbprint(EVP_PKEY *);		/* RFC 7638, b64url */
char		*keys_key_authorization(const char *, const char *);
/* b64url DER; with_cn: the first identifier as the subject's CN. */
char		*keys_csr(EVP_PKEY *, char *const *, size_t, int with_cn);
/* tls-alpn-01's self-signed certificate for an identifier (RFC 8737 3). */
X509		*keys_alpn_cert(EVP_PKEY *, const char *ident, const char *keyauth);

/* jws.c: RFC 7515 flattened JSON serialisation as RFC 8555 uses it. */
const char	*jws_alg(EVP_PKEY *);			/* "ES256", ... */
/*
 * Sign payload (NULL means the empty payload of POST-as-GET).  With kid
 * NULL the protected header carries the public "jwk" instead.  Returns
 * the JSON text; caller frees.
 */
char		*jws_sign(EVP_PKEY *, const char *kid, const char *nonce,
		    const char *url, const char *payload);
/* RFC 8555 7.3.5 keyChange's inner JWS: the new key's jwk, no nonce. */
char		*jws_sign_inner(EVP_PKEY *, const char *url, const char *payload);
/* RFC 8555 7.3.4 externalAccountBinding object (HS256). */
json_t		*jws_eab(const char *kid, const unsigned char *, size_t,
		    EVP_PKEY *account, const char *url);

/* http_client.c: asynchronous HTTPS client with keep-alive connections. */
struct http_response {
	int		 hr_status;	/* 0 on transport error */
	const char	*hr_error;	/* transport error, or NULL */
	struct evkeyvalq *hr_headers;
	const char	*hr_body;	/* NUL terminated */
	size_t		 hr_len;
};
typedef void	(*http_cb)(const struct http_response *, void *);
struct http_pool;
struct http_request;

#define HTTP_MAX_BODY	(4 * 1024 * 1024)

/*
 * One pool per issuer.  max_conns keep-alive connections per origin,
 * requests beyond that wait in FIFO order.  Verification follows ctx.
 */
struct http_pool *http_pool_new(struct event_base *, struct evdns_base *,
		    SSL_CTX *, unsigned int max_conns, int timeout_sec);
void		 http_pool_free(struct http_pool *);
/* method is "GET", "HEAD" or "POST"; the callback runs exactly once. */
struct http_request *http_pool_request(struct http_pool *, const char *method,
		    const char *url, const char *content_type, const char *accept,
		    const char *body, size_t len, http_cb, void *);
void		 http_request_cancel(struct http_request *);	/* no callback */
const char	*http_response_header(const struct http_response *,
		    const char *);
/* Link: <url>;rel="rel" values, in order; returns a NULL-terminated array. */
char		**http_response_links(const struct http_response *,
		    const char *rel);
void		 http_links_free(char **);
SSL_CTX		*http_ssl_ctx(const char *cafile, int verify, char **);

/*
 * ready.c: before the CA is told to validate, fetch the answer the way
 * the CA will (HTTP-01: GET the token from the configured address with
 * Host: the identifier), and try again briefly until it answers.
 */
#define READY_LIMIT	30		/* seconds before the order fails */
#define READY_LIMIT_MAX	600		/* challenge_check timeout= */
struct ready_check;
/* rc 0: it answers; -1: it never did, why says what came back. */
typedef void	(*ready_cb)(int rc, const char *why, void *);
struct ready_stats {
	unsigned long long	 rs_passed;		/* checks that passed */
	unsigned long long	 rs_failed_tries;	/* tries that did not */
	unsigned long long	 rs_gave_up;		/* checks that failed */
};
/* addr NULL: checks are off.  from says where addr comes from. */
void		 ready_configure(const char *addr, int port, int limit,
		    const char *from);
int		 ready_enabled(void);
/*
 * Where tls-alpn-01 is checked: tls_alpn_listen's address and bound
 * port, else nginx's https listen.  from says which, for the log.
 */
void		 ready_configure_tls(const char *addr, int port,
		    const char *from);
/* NULL when the type has no check (yet): nothing to wait for. */
struct ready_check *ready_start(struct event_base *, enum challenge_type,
		    const char *ident, const char *token, const char *keyauth,
		    ready_cb, void *);
/* dns-01's: NULL when check (the issuer's dns_check) is "off". */
struct ready_check *ready_start_dns(struct event_base *, const char *ident,
		    const char *fqdn, const char *value, const char *check,
		    const char *update, ready_cb, void *);
void		 ready_cancel(struct ready_check *);	/* no callback */
void		 ready_get_stats(struct ready_stats *);

/*
 * ari.c: ACME Renewal Information (RFC 9773).  What the CA said of one
 * certificate: its suggested window, when we chose to renew inside it,
 * and when to ask again.  Kept in STATE/ari/ID.json across restarts.
 */
#define ARI_RETRY_DEFAULT	(6 * 3600)	/* no Retry-After */
#define ARI_RETRY_MIN		3600		/* clamp of Retry-After */
#define ARI_RETRY_MAX		(24 * 3600)
#define ARI_RETRY_ERROR		3600		/* after a failed fetch */
#define ARI_MAX_BODY		8192
#define ARI_CERT_ID_MAX		512
struct ari_state {
	char		*as_cert_id;	/* base64url(AKI keyid).base64url(serial) */
	time_t		 as_start;	/* suggestedWindow; 0: none known */
	time_t		 as_end;
	time_t		 as_renew_at;	/* chosen inside it */
	time_t		 as_next_fetch;	/* not before: Retry-After */
	char		*as_explanation;	/* explanationURL, or NULL */
};
char		*ari_cert_id(const char *pem, char **);
char		*ari_cert_id_x509(X509 *, char **);
int		 ari_parse(const char *, size_t, struct ari_state *, char **);
int		 ari_parse_time(const char *, time_t *);
time_t		 ari_next_fetch(time_t now, time_t retry_after);
time_t		 ari_pick(const struct ari_state *, time_t not_after, time_t now,
		    double random_unit);
char		*ari_state_json(const struct ari_state *);
int		 ari_state_parse(const char *, size_t, struct ari_state *,
		    char **);
void		 ari_state_clear(struct ari_state *);

/* store.c: state_path, atomic files. */
struct cert_meta {
	time_t		 cm_not_before;
	time_t		 cm_not_after;
	time_t		 cm_issued;	/* when we stored it */
	char		*cm_url;	/* certificate URL at the CA */
	char		**cm_idents;
	size_t		 cm_nidents;
	enum key_type	 cm_key;
};
int		 store_write_atomic(const char *, const void *, size_t,
		    mode_t, char **);
int		 store_init(const char *dir, char **);		/* mkdir 0700 */
/* Around many loads in a row: see store_dir_ok(). */
void		 store_batch_begin(void);
void		 store_batch_end(void);
/* 0: loaded, 1: absent, -1: error (cause) */
int		 store_load_account(const char *dir, EVP_PKEY **, char **url,
		    char **);
int		 store_save_account_key(const char *dir, EVP_PKEY *, char **);
int		 store_save_account_url(const char *dir, const char *, char **);
int		 store_set_aside_account(const char *dir, const char *suffix,
		    char **);
/* account.key.next: a rollover's new key, until the CA took it. */
int		 store_save_account_next(const char *dir, EVP_PKEY *, char **);
int		 store_load_account_next(const char *dir, EVP_PKEY **, char **);
int		 store_promote_account_next(const char *dir, char **);
int		 store_drop_account_next(const char *dir, char **);
/* account.deactivated: the URL of an account the CA deactivated. */
int		 store_mark_deactivated(const char *dir, const char *url,
		    char **);
int		 store_load_deactivated(const char *dir, char **url, char **);
int		 store_key_type(EVP_PKEY *, enum key_type *);
/*
 * A stored certificate as a start serves it: the key as PEM text, which
 * the zone takes, and the CertID, so neither is decoded again.
 */
struct stored_cert {
	char			*sd_chain;
	char			*sd_key_pem;	/* PKCS#8; keys_pem_free() */
	char			*sd_cert_id;	/* ARI CertID; NULL: none */
	struct cert_meta	 sd_meta;
};
int		 store_load_stored(const char *dir, const char *id,
		    struct stored_cert *, char **);
void		 store_stored_clear(struct stored_cert *);
int		 store_load_cert(const char *dir, const char *id, char **chain,
		    EVP_PKEY **, struct cert_meta *, char **);
int		 store_save_cert(const char *dir, const char *id,
		    const char *chain, EVP_PKEY *, const struct cert_meta *,
		    char **);
int		 store_save_cert_x509(const char *dir, const char *id,
		    const char *chain, X509 *leaf, EVP_PKEY *,
		    const struct cert_meta *, char **);
/* A certificate to save, for store_save_certs(). */
struct store_save {
	const char		*sv_dir;
	const char		*sv_id;
	const char		*sv_chain;
	X509			*sv_leaf;	/* its first, or NULL */
	EVP_PKEY		*sv_key;
	const struct cert_meta	*sv_meta;
	int			 sv_rc;		/* 0 or -1 */
	char			*sv_cause;	/* with -1; caller frees */
};
void		 store_save_certs(struct store_save *, size_t);
void		 store_meta_clear(struct cert_meta *);
/*
 * STATE/pending/ID.json: an order from its finalize until its certificate
 * is stored (URL, identifiers, key), so a restart resumes it instead of
 * having the CA issue again.  Load: 0 found, 1 none, -1 error (cause).
 */
int		 store_save_pending(const char *dir, const char *id,
		    const char *url, char *const *idents, size_t, EVP_PKEY *,
		    char **);
int		 store_load_pending(const char *dir, const char *id,
		    char *const *idents, size_t, char **url, EVP_PKEY **,
		    char **);
void		 store_remove_pending(const char *dir, const char *id);
/* -1 (cause) unless chain's first certificate is key's. */
int		 store_check_pair(const char *id, const char *chain, EVP_PKEY *,
		    char **);
/* Fill not_before/not_after from the first certificate of a PEM chain. */
int		 store_chain_dates(const char *, time_t *, time_t *);
X509		*store_chain_leaf(const char *, time_t *, time_t *);

/* STATE/ari/ID.json (ari.c).  Load: 0 found, 1 none, -1 error. */
int		 store_save_ari(const char *dir, const char *id,
		    const struct ari_state *, char **);
int		 store_load_ari(const char *dir, const char *id,
		    struct ari_state *, char **);
void		 store_remove_ari(const char *dir, const char *id);

/*
 * STATE/dns-01/VALUE.json: a dns-01 TXT record asked for and not yet
 * removed (order_dns.c).  Load: every note that parses; -1 (cause) only
 * for a folder that cannot be read.
 */
#define STORE_DNS_MAX_NOTES	4096
struct store_dns_record {
	char		*sd_fqdn;	/* "_acme-challenge.NAME." */
	char		*sd_value;
};
int		 store_save_dns_record(const char *dir, const char *fqdn,
		    const char *value, char **);
int		 store_dns_record_parse(const char *, size_t, char **fqdn,
		    char **value, char **);
int		 store_load_dns_records(const char *dir,
		    struct store_dns_record **, size_t *, char **);
void		 store_dns_records_free(struct store_dns_record *, size_t);
void		 store_remove_dns_record(const char *dir, const char *value);

/* writer.c: store_save_cert() on a thread of its own. */
typedef void	(*writer_cb)(int rc, const char *cause, void *);
struct writer_job;
int		 writer_start(struct event_base *, char **);
void		 writer_stop(void);
struct writer_job *writer_save_cert(const char *dir, const char *id,
		    const char *chain, EVP_PKEY *, const struct cert_meta *,
		    writer_cb, void *);
struct writer_job *writer_save_cert_x509(const char *dir, const char *id,
		    const char *chain, X509 *leaf, EVP_PKEY *,
		    const struct cert_meta *, writer_cb, void *);
void		 writer_cancel(struct writer_job *);

/* loop.c: a libmicrohttpd daemon driven by the libevent loop. */
struct MHD_Daemon;
struct loop_mhd {
	struct MHD_Daemon	*lm_daemon;
	struct event_base	*lm_base;
	struct event		*lm_read;	/* its epoll fd */
	struct event		*lm_timer;	/* its next timeout */
	const char		*lm_name;	/* for the log */
};
int		 loop_mhd_start(struct loop_mhd *, struct event_base *,
		    struct MHD_Daemon *, const char *, char **);
void		 loop_mhd_schedule(struct loop_mhd *);
void		 loop_mhd_wake(struct loop_mhd *);
void		 loop_mhd_urgent(struct loop_mhd *);	/* ahead of the rest */
/* The loop's priorities (main.c): the control API's, then the rest. */
#define LOOP_PRI_URGENT		0
#define LOOP_PRI_DEFAULT	1
#define LOOP_NPRIORITIES	2
void		 loop_mhd_stop(struct loop_mhd *);
char		*loop_mhd_message(const char *, va_list);

/*
 * mhd_guard.c: what both libmicrohttpd servers add to MHD's own limits,
 * one guard per connection (its socket context): a deadline for each
 * request to arrive whole, however slowly its bytes trickle in (MHD's
 * timeout only counts idleness), and the request targets and headers
 * refused before any handler sees them.
 */
struct MHD_Connection;
struct mhd_guard {
	struct MHD_Connection	*mg_conn;
	struct loop_mhd		*mg_loop;
	struct event		*mg_deadline;	/* NULL: no loop (fuzzing) */
	int			 mg_seconds;	/* for each request */
	int			 mg_nul;	/* %00 in the request target */
	void			*mg_arg;	/* the server's own */
};
struct mhd_guard *mhd_guard_new(struct loop_mhd *, struct MHD_Connection *,
		    int seconds, void *);
void		 mhd_guard_free(struct mhd_guard *);
struct mhd_guard *mhd_guard_of(struct MHD_Connection *);
void		 mhd_guard_arrived(struct MHD_Connection *);
void		 mhd_guard_next(struct MHD_Connection *);
const char	*mhd_guard_refuse(struct MHD_Connection *);
size_t		 mhd_guard_unescape(void *, struct MHD_Connection *, char *);
void		 mhd_guard_cut(struct MHD_Connection *);

/* shm_writer.c: the segment nginx reads (proto/acme_shm.h). */
struct shm_stats {
	uint64_t	 ss_generation;		/* last published */
	uint64_t	 ss_last_serial;
	uint64_t	 ss_publishes;
	uint64_t	 ss_failures;		/* images that did not fit */
	uint64_t	 ss_restores;		/* sizes put back after a cut */
	uint64_t	 ss_cert_writes;	/* publishes that wrote the certs */
	uint64_t	 ss_adopted;		/* blocks a previous run left */
	uint64_t	 ss_bytes_written;	/* by publishes, wipes included */
	uint64_t	 ss_publish_ns;		/* CPU time publishes took */
	uint32_t	 ss_used;		/* of its slot, to its last byte */
	uint32_t	 ss_slot_size;		/* room for one image */
	uint64_t	 ss_image_bytes;	/* what the last image points at */
	uint64_t	 ss_zone_used;		/* not free: images, blocks */
	uint64_t	 ss_zone_size;
	int		 ss_full;		/* the last publish failed */
	size_t		 ss_certs;
	size_t		 ss_tokens;
	size_t		 ss_alpns;		/* tls-alpn-01 certificates */
};
int		 shm_open_zone(struct event_base *, const char *path,
		    size_t, const char *group, char **);
void		 shm_close(void);
void		 shm_cert_set(const char *id, const char *issuer,
		    char *const *names, size_t, const char *chain,
		    const char *key_pem, time_t not_before, time_t not_after);
void		 shm_cert_take(const char *id, const char *issuer,
		    char *const *names, size_t, char **chain, char **key_pem,
		    time_t not_before, time_t not_after);
void		 shm_cert_remove(const char *id);
void		 shm_token_add(const char *token, const char *keyauth);
void		 shm_token_remove(const char *token);
void		 shm_alpn_add(const char *ident, const char *keyauth, X509 *,
		    EVP_PKEY *);
void		 shm_alpn_remove(const char *ident, const char *keyauth);
int		 shm_publish(void);		/* now; -1 when full */
void		 shm_get_stats(struct shm_stats *);
char		*shm_zone_check(const char *path);	/* NULL: usable */

/* zone_readers.c: can nginx's workers open the shared zone? */
enum zone_readers_state {
	ZONE_READERS_UNKNOWN,		/* who they are is not known here */
	ZONE_READERS_YES,
	ZONE_READERS_NO
};
struct zone_readers {
	enum zone_readers_state	 zr_state;
	char			 zr_user[64];
	char			 zr_group[64];
	char			 zr_source[128];	/* where we learnt it */
	char			 zr_why[PATH_MAX + 128];	/* when NO */
};
struct stat;
int		 zone_readers_may(const struct stat *, uid_t, const gid_t *,
		    int, mode_t);
void		 zone_readers_check(const char *path, const char *user,
		    const char *group, const char *source);
const struct zone_readers *zone_readers_get(void);

/* dns_hook.c: "PROGRAM add|del FQDN VALUE", one at a time. */
struct dns_hook_job;
typedef void	(*dns_hook_cb)(int rc, const char *why, void *);
struct dns_hook_job *dns_hook_run(struct event_base *, const char *program,
		    int timeout, const char *verb, const char *fqdn,
		    const char *value, dns_hook_cb, void *);
void		 dns_hook_forget(struct dns_hook_job *);	/* no callback */
void		 dns_hook_shutdown(void);
/* dns_update.c: RFC 2136 UPDATE with TSIG, one at a time. */
#define DNS_UPDATE_SECRET_MAX	512	/* base64 characters */
struct dns_update_key {
	char		 uk_name[256];
	char		 uk_alg[16];
	char		 uk_secret[DNS_UPDATE_SECRET_MAX + 1];
};
struct dns_update_job;
struct dns_update_req;
int		 dns_update_key_parse(const char *, size_t,
		    struct dns_update_key *, char **);
int		 dns_update_key_load(const char *, struct dns_update_key *,
		    char **);
int		 dns_update_conf(int argc, char **argv, char **spec, char **);
struct dns_update_req *dns_update_req_new(const char *server,
		    const char *zone, const struct dns_update_key *,
		    const char *verb, const char *fqdn, const char *value,
		    char **);
void		 dns_update_req_free(struct dns_update_req *);
int		 dns_update_answer_check(const struct dns_update_req *,
		    const uint8_t *, size_t, char **);
struct dns_update_job *dns_update_run(struct event_base *, const char *spec,
		    const char *verb, const char *fqdn, const char *value,
		    dns_hook_cb, void *);
void		 dns_update_forget(struct dns_update_job *);
void		 dns_update_shutdown(void);
int		 dns_update_spec_server(const char *spec, const char *fqdn,
		    struct sockaddr_storage *, socklen_t *, char **zone);
/*
 * dns_check.c: DNS questions over the loop (UDP, TCP when truncated):
 * the zone of a name, and whether every server of a zone answers a TXT
 * value (ready.c's dns-01 row).
 */
struct dns_query;
struct dns_check;
struct dns_check_server {
	char			*ds_shown;	/* "NAME ADDR:PORT" or "ADDR:PORT" */
	struct sockaddr_storage	 ds_addr;
	socklen_t		 ds_addrlen;
	int			 ds_has;	/* it answers the value */
	char			*ds_what;	/* else what it answers */
};
/* ans: the answer's bytes, or NULL and why.  It may free the query. */
typedef void	(*dns_query_cb)(struct dns_query *, const uint8_t *ans,
		    size_t len, const char *why, void *);
/* passed 1, or 0 and what lags (the callee frees what). */
typedef void	(*dns_check_cb)(int passed, char *what, void *);
char		*dns_rcode_name(int);	/* "NOTAUTH", or "RCODE N" */
int		 dns_check_addr_parse(const char *, struct sockaddr_storage *,
		    socklen_t *, char *shown, size_t);
int		 dns_check_resolver(struct sockaddr_storage *, socklen_t *,
		    char *shown, size_t, char **);
struct dns_query *dns_query_start(struct event_base *,
		    const struct sockaddr_storage *, socklen_t,
		    const char *shown, const char *qname, int qtype, int rd,
		    dns_query_cb, void *);
void		 dns_query_free(struct dns_query *);	/* no callback */
uint16_t	 dns_query_id(const struct dns_query *);
const char	*dns_query_server(const struct dns_query *);
int		 dns_check_answer_match(const uint8_t *, size_t, uint16_t id,
		    const char *qname, int qtype);
int		 dns_check_soa_zone(const uint8_t *, size_t, uint16_t id,
		    const char *server, const char *name, int need_aa,
		    char **zone, char **why);
int		 dns_check_txt_judge(const uint8_t *, size_t, uint16_t id,
		    const char *name, const char *value, char **what);
int		 dns_check_ns_parse(const uint8_t *, size_t, uint16_t id,
		    const char *server, const char *zone,
		    struct dns_check_server **, size_t *, char ***bare,
		    size_t *nbare, char **why);
void		 dns_check_addr_parse_answer(const uint8_t *, size_t,
		    uint16_t id, const char *name, int qtype,
		    struct dns_check_server **, size_t *);
void		 dns_check_servers_free(struct dns_check_server *, size_t);
struct dns_check *dns_check_start(struct event_base *, const char *list,
		    const struct sockaddr_storage *lookup, socklen_t,
		    const char *zone, const char *fqdn, const char *value,
		    dns_check_cb, void *, char **why);
void		 dns_check_free(struct dns_check *);	/* no callback */
/* dns_publish.c: a dns-01 TXT record through whichever the issuer has. */
struct dns_publisher {
	const char	*dp_hook;	/* dns_hook PROGRAM, or NULL */
	int		 dp_hook_timeout;
	const char	*dp_update;	/* dns_update's spec, or NULL */
};
struct dns_publish_job {
	struct dns_hook_job	*pj_hook;
	struct dns_update_job	*pj_update;
};
struct dns_publish_job dns_publish_run(struct event_base *,
		    const struct dns_publisher *, const char *verb,
		    const char *fqdn, const char *value, dns_hook_cb, void *);
void		 dns_publish_forget(struct dns_publish_job *);
/* order_dns.c: records left behind by an earlier run, removed. */
void		 order_dns_sweep(struct event_base *,
		    const struct conf_issuer *);
void		 order_dns_shutdown(void);	/* after dns_hook_shutdown */

/* challenge.c: HTTP-01 responder on libmicrohttpd inside the loop. */
#define CHALLENGE_MAX_CONNS	256
#define CHALLENGE_CONN_TIMEOUT	10	/* seconds */
#define CHALLENGE_REQUEST_TIMEOUT 10	/* seconds from accept to request */
#define CHALLENGE_PER_IP	64	/* connections of one address */
#define CHALLENGE_PER_IP_LOOPBACK 128	/* listening on loopback */
#define CHALLENGE_TOKEN_MAX	128
int		 challenge_start(struct event_base *, const char *addr,
		    int port, char **);
void		 challenge_stop(void);
int		 challenge_port(void);		/* the bound port */
void		 challenge_add(const char *token, const char *keyauth);
void		 challenge_remove(const char *token);
int		 challenge_token_valid(const char *);
unsigned long	 challenge_served(void);
/*
 * A token the responder lacks may be looked up elsewhere (with a cluster,
 * in Redis): lookup returns -1 if it cannot ask, else calls found once,
 * with NULL when there is no such token.
 */
typedef void	(*challenge_found_cb)(const char *keyauth, size_t, void *);
typedef int	(*challenge_lookup_fn)(const char *token, challenge_found_cb,
		    void *);
void		 challenge_set_lookup(challenge_lookup_fn);

/* alpn.c: tls-alpn-01 responder (RFC 8737) on libevent, tls_alpn_listen. */
#define ALPN_MAX_CONNS		64
#define ALPN_HANDSHAKE_TIMEOUT	10	/* seconds from accept to handshake */
#define ALPN_MAX_NAMES		1024	/* validation certificates held */
int		 alpn_start(struct event_base *, const char *addr, int port,
		    char **);
void		 alpn_stop(void);
int		 alpn_port(void);		/* the bound port */
int		 alpn_running(void);
int		 alpn_add(const char *ident, const char *keyauth, X509 *,
		    EVP_PKEY *, char **);
void		 alpn_remove(const char *ident, const char *keyauth);
char		*alpn_sni_name(const char *ident);	/* RFC 8738 6 for IPs */

/* nonce.c: per-issuer pool of unused Replay-Nonce values. */
#define NONCE_POOL_MAX		256
#define NONCE_MAX_LEN		256
struct nonce_pool;
struct nonce_pool *nonce_pool_new(void);
void		 nonce_pool_free(struct nonce_pool *);
int		 nonce_put(struct nonce_pool *, const char *);
char		*nonce_take(struct nonce_pool *);	/* NULL if empty */
size_t		 nonce_count(const struct nonce_pool *);

/* acme.c: one issuer: directory, account, paced and retried requests. */
enum issuer_state {
	ISSUER_DIRECTORY,	/* fetching the directory */
	ISSUER_ACCOUNT,		/* loading or registering the account */
	ISSUER_READY,
	ISSUER_BACKOFF,		/* bootstrap failed; waiting to retry */
	ISSUER_DEACTIVATED,	/* its account is deactivated: no orders */
	ISSUER_STATE_MAX
};

#define ACME_MAX_INFLIGHT	32	/* requests in flight per issuer */
#define ACME_MAX_OPEN_ORDERS	256	/* orders under way per issuer */
#define ACME_TIMEOUT		30	/* request_timeout's default */
#define ACME_BADNONCE_TRIES	10
#define ACME_NET_TRIES		5
#define ACME_RATE_TRIES		5
#define ACME_RETRY_AFTER_MAX	3600	/* longer waits go back to the order */
#define ACME_BOOT_BACKOFF_MAX	300	/* seconds, issuer bootstrap */

struct acme_reply {
	int		 status;	/* HTTP status, 0 on transport error */
	const char	*error;		/* transport error or NULL */
	json_t		*json;		/* parsed body (borrowed) or NULL */
	const char	*body;
	size_t		 len;
	const char	*location;
	const char	*problem_type;	/* "urn:ietf:params:acme:error:..." */
	const char	*problem_detail;
	time_t		 retry_after;	/* absolute wall time, 0 if none */
	const struct http_response *http;
};
typedef void	(*acme_cb)(const struct acme_reply *, void *);
struct acme_issuer;
struct acme_req;

struct acme_issuer *acme_issuer_new(struct event_base *, struct evdns_base *,
		    const struct conf_issuer *);
void		 acme_issuer_close(struct acme_issuer *);
void		 acme_issuer_free(struct acme_issuer *);
const char	*acme_issuer_name(const struct acme_issuer *);
enum issuer_state acme_issuer_state(const struct acme_issuer *);
const char	*acme_issuer_state_name(enum issuer_state);
const char	*acme_issuer_uri(const struct acme_issuer *);
const char	*acme_issuer_account_url(const struct acme_issuer *);
const char	*acme_issuer_thumbprint(const struct acme_issuer *);
const char	*acme_issuer_state_path(const struct acme_issuer *);
const char	*acme_issuer_preferred_chain(const struct acme_issuer *);
const char	*acme_issuer_revoke_url(const struct acme_issuer *);	/* or NULL */
const char	*acme_issuer_renewal_info(const struct acme_issuer *);	/* or NULL */
const char	*acme_issuer_profile(const struct acme_issuer *, int *require);
int		 acme_issuer_cn_in_csr(const struct acme_issuer *);
int		 acme_issuer_profile_listed(const struct acme_issuer *,
		    const char *);
void		 acme_fleet_up(struct acme_issuer *);
int		 acme_issuer_same_conf(const struct acme_issuer *,
		    const struct conf_issuer *);
void		 acme_issuer_update_conf(struct acme_issuer *,
		    const struct conf_issuer *);
/* Signed POST (payload NULL is POST-as-GET) with the account's kid. */
struct acme_req	*acme_post(struct acme_issuer *, const char *url,
		    const char *payload, const char *accept, acme_cb, void *);
/* newOrder; a 201 answer leaves an open order to acme_order_close(). */
#define ACME_NEW_ORDER_5XX_TO_CALLER	0x01	/* not retried as sent */
struct acme_req	*acme_new_order(struct acme_issuer *, const char *payload,
		    int flags, acme_cb, void *);
void		 acme_order_close(struct acme_issuer *);
/* A POST to an authorization or a challenge (see acme_next_queue()). */
struct acme_req	*acme_post_authz(struct acme_issuer *, const char *url,
		    const char *payload, acme_cb, void *);
/* GET renewalInfo/CertID (RFC 9773); acme_issuer_renewal_info() first. */
struct acme_req	*acme_renewal_info(struct acme_issuer *, const char *cert_id,
		    acme_cb, void *);
void		 acme_req_cancel(struct acme_req *);
/*
 * The account (RFC 8555 7.3): one operation at a time per issuer; -1 with
 * a cause when it cannot start, else cb(0, NULL) or cb(-1, why) later.
 */
typedef void	(*acme_account_cb)(int, const char *, void *);
int		 acme_account_key_change(struct acme_issuer *, int key_type,
		    acme_account_cb, void *, char **);
int		 acme_account_deactivate(struct acme_issuer *, acme_account_cb,
		    void *, char **);
void		 acme_account_forget(struct acme_issuer *);	/* no cb */
json_t		*acme_account_json(const struct acme_issuer *);
/* Human summary of a failed reply: "HTTP 403 unauthorized: detail". */
char		*acme_reply_describe(const struct acme_reply *);
int		 acme_problem_is(const struct acme_reply *, const char *);

/* order.c: one certificate and its order state machine. */
enum order_state {
	ORDER_IDLE,		/* no order; waiting for the renewal time */
	ORDER_NEW,		/* newOrder sent */
	ORDER_AUTHZ,		/* fetching an authorization */
	ORDER_CHALLENGE,	/* telling the CA the challenge is ready */
	ORDER_AUTHZ_POLL,	/* waiting for the authorization to settle */
	ORDER_FINALIZE,		/* CSR sent */
	ORDER_ORDER_POLL,	/* waiting for the certificate */
	ORDER_DOWNLOAD,		/* fetching the chain */
	ORDER_STORE,		/* writing it to state_path */
	ORDER_BACKOFF,		/* failed; waiting to try again */
	ORDER_LEASE,		/* replicas: the lease, then Redis' state */
	ORDER_SYNC,		/* replicas: every one has the token */
	ORDER_SHARE,		/* replicas: a fenced write to Redis */
	ORDER_READY_CHECK,	/* fetching our own answer, as the CA will */
	ORDER_DNS_PUBLISH,	/* dns-01: the hook publishes the record */
	ORDER_STATE_MAX
};

#define ORDER_POLL_FIRST_MS	250
#define ORDER_POLL_MAX_MS	10000
#define ORDER_POLL_MAX_TRIES	60
#define ORDER_BACKOFF_MIN	60		/* seconds */
#define ORDER_BACKOFF_MAX	(24 * 3600)
#define ORDER_BACKOFF_PERMANENT	3600		/* first wait, hopeless errors */

/* What the control API shows of one certificate (order_cert_info()). */
struct order_info {
	const char	*oi_id;
	const char	*oi_issuer;
	char *const	*oi_idents;
	size_t		 oi_nidents;
	enum key_type	 oi_key;
	enum order_state oi_state;
	int		 oi_have;		/* a certificate is stored */
	time_t		 oi_not_before;		/* 0 without one */
	time_t		 oi_not_after;
	time_t		 oi_renew_at;		/* idle: the next renewal */
	int		 oi_renew_ari;		/* it is from an ARI window */
	time_t		 oi_ari_start;		/* the CA's window, 0: none */
	time_t		 oi_ari_end;
	time_t		 oi_ari_next_fetch;	/* 0: none planned */
	const char	*oi_ari_explanation;	/* or NULL */
	const char	*oi_cert_id;		/* ARI CertID, or NULL */
	const char	*oi_profile;		/* profile=, or NULL */
	const char	*oi_sent_profile;	/* in the last newOrder */
	time_t		 oi_retry_at;		/* backoff: the next try */
	int		 oi_failures;		/* since the last success */
	const char	*oi_last_error;		/* or NULL */
	time_t		 oi_last_error_at;
};

struct cert;
typedef void	(*order_revoke_cb)(int rc, const char *why, void *);
struct cert	*order_cert_new(struct event_base *, struct acme_issuer *,
		    const struct conf_cert *);
void		 order_cert_free(struct cert *);
void		 order_cert_start(struct cert *);	/* load state, arm */
void		 order_renew_now(struct cert *);
const char	*order_cert_id(const struct cert *);
enum order_state order_cert_state(const struct cert *);
int		 order_cert_valid(const struct cert *);
int		 order_cert_same_conf(const struct cert *,
		    const struct conf_cert *);
struct acme_issuer *order_cert_issuer(const struct cert *);
void		 order_cert_info(const struct cert *, struct order_info *);
/* order_dns.c: the challenge type the certificate is validated with. */
enum challenge_type order_cert_challenge(const struct cert *);
const char	*order_state_name(enum order_state);
int		 order_revoke(struct cert *, int reason, const char *name,
		    order_revoke_cb, void *, char **);
void		 order_revoke_cancel(struct cert *);
void		 order_cluster_sync(struct cert *);	/* order_cluster.c */
int		 order_revoking(const struct cert *);
/* When to renew: 2/3 of the lifetime, 1/2 for <= 10 days, minus jitter. */
time_t		 order_renew_time(time_t not_before, time_t not_after,
		    double random_unit);

/* scheduler.c: the set of issuers and certificates, reconciled on reload. */
#define SCHED_PROGRESS_INTERVAL	10	/* seconds between progress lines */
void		 sched_init(struct event_base *, struct evdns_base *);
void		 sched_apply(const struct conf *);
struct cert	*sched_add_cert(const struct conf_cert *);
int		 sched_drop_cert(const char *);
void		 sched_shutdown(void);
size_t		 sched_cert_count(void);
struct cert	*sched_cert_at(size_t);
struct cert	*sched_cert_find(const char *);
size_t		 sched_issuer_count(void);
struct acme_issuer *sched_find_issuer(const char *);
struct acme_issuer *sched_issuer_at(size_t);
void		 sched_cluster_up(void);
void		 sched_cluster_cert(const char *);

/*
 * feed.c: events for GET /v1/events.  feed_emit(type, fmt, ...) packs the
 * fields with json_pack(fmt, ...); the listener gets one JSON text.
 */
typedef void	(*feed_cb)(const char *line, void *);
void		 feed_listen(feed_cb, void *);
void		 feed_emit(const char *type, const char *fmt, ...);

/*
 * metrics.c: counters for GET /metrics (Prometheus text format).  acme.c
 * counts requests, order.c outcomes; the rest comes in a snapshot that the
 * caller of metrics_render() builds, so that metrics.c calls nothing above
 * it.
 */
enum metrics_outcome {
	METRICS_ISSUED,		/* a first certificate for the id */
	METRICS_RENEWED,	/* replaced one we had */
	METRICS_FAILED,		/* the order failed; backing off */
	METRICS_REVOKED,	/* revoked through the API */
	METRICS_OUTCOME_MAX
};
void		 metrics_acme_request(const char *issuer, const char *endpoint,
		    int status, double seconds);
void		 metrics_order_outcome(const char *issuer,
		    enum metrics_outcome);
struct metrics_snapshot {
	const struct order_info	*ms_certs;	/* ms_ncerts, in order */
	const int		*ms_valid;	/* an unexpired one is held */
	size_t			 ms_ncerts;
	unsigned long		 ms_challenges_served;
	struct ready_stats	 ms_ready;
	struct shm_stats	 ms_shm;
	struct cluster_status	 ms_cluster;
};
char		*metrics_render(const struct metrics_snapshot *); /* to free */
void		 metrics_reset(void);		/* for the unit tests */

/* control.c: the control API on a Unix socket (proto/control-api.md). */
#define CONTROL_MAX_CONNS	64	/* open connections at once */
#define CONTROL_RESERVED_CONNS	8	/* of them, for root and our uid */
#define CONTROL_MAX_CONNS_PER_UID 16	/* any other uid */
#define CONTROL_CONN_TIMEOUT	30	/* seconds a connection may idle */
#define CONTROL_REQUEST_TIMEOUT	30	/* seconds for a request to arrive */
#define CONTROL_MAX_BODY	(64 * 1024)	/* request body bytes */
#define CONTROL_MEMORY_LIMIT	(32 * 1024)	/* request line + headers */
#define CONTROL_ACCEPT_PAUSE	1	/* seconds, after EMFILE */
#define CONTROL_MAX_STREAMS	16	/* GET /v1/events at once */
#define CONTROL_RESERVED_STREAMS 4	/* of them, for root and our uid */
#define CONTROL_MAX_STREAMS_PER_UID 4	/* any other uid */
#define CONTROL_STREAM_BACKLOG	(1024 * 1024)	/* unread event bytes */
#define CONTROL_STREAM_CHECK	5	/* seconds between hang-up checks */
#define CONTROL_STREAM_STALL	15	/* seconds with bytes left unread */
#define CONTROL_STREAM_KEEPALIVE 30	/* seconds of silence: an empty line */

/* What main.c does for the API: it owns the configuration. */
enum control_result {
	CONTROL_OK,
	CONTROL_INVALID,	/* 422: the configuration would refuse it */
	CONTROL_CONFLICT,	/* 409 */
	CONTROL_NOT_FOUND,	/* 404 */
	CONTROL_FAILED,		/* 500: it could not be saved */
	CONTROL_UNAVAILABLE	/* 503: Redis is away; the fleet would miss it */
};
struct control_hooks {
	int			 (*ch_reload)(char **);
	enum control_result	 (*ch_add)(const char *issuer, char *const *,
				    size_t, const char *key, const char *profile,
				    const char *challenge, const char **id,
				    char **);
	enum control_result	 (*ch_remove)(const char *id, char **);
};
int		 control_start(struct event_base *, const char *path,
		    const char *group, const struct control_hooks *, char **);
void		 control_stop(void);

/* priv.c: "user NAME [GROUP]": root only until the sockets are bound. */
struct priv_user {
	char		*pu_user;
	char		*pu_group;		/* name, or the gid in digits */
	uid_t		 pu_uid;
	gid_t		 pu_gid;
};
int		 priv_lookup(const char *user, const char *group,
		    struct priv_user *, char **);
void		 priv_user_clear(struct priv_user *);
int		 priv_state_prepare(const char *dir, const struct priv_user *,
		    char **);			/* as root: create if missing */
int		 priv_drop(const struct priv_user *, char **);
int		 priv_state_check(const char *dir, const struct priv_user *,
		    char **);			/* after: all of it the user's */
int		 priv_readable(const char *what, const char *path,
		    const struct priv_user *, char **);

/*
 * fsafe.c: folders and files another local user cannot hand us.
 *
 * fsafe_mkdir() opens path as a folder, creating what is missing, and
 * returns an O_DIRECTORY descriptor (the caller closes it) or -1 with
 * errno and *cause set.  Each component is opened with O_NOFOLLOW and
 * judged by fstat: it belongs to root or uid (-1: geteuid()); a parent
 * writable by group or others without the sticky bit is warned about once
 * (a pod's emptyDir); the folder itself has no group or other write bit
 * beyond mode.  A symbolic link is
 * followed only when root or uid owns it.  A missing parent is made
 * FSAFE_PARENT_MODE and stays its creator's; the folder itself is made
 * with mode, then given uid and gid (-1: unchanged) through fchown and
 * fchmod on the descriptor.  An existing folder is never changed.
 * A relative path starts from the working folder, which is trusted.
 * fsafe_opendir() is the same walk without creating: -1 with errno ENOENT
 * when a component is missing.
 *
 * fsafe_open_regular() opens path to read (O_RDONLY | O_CLOEXEC |
 * O_NOCTTY, plus flags, e.g. O_NOFOLLOW) without blocking in open(): a
 * FIFO or device is refused, and the descriptor returned is blocking
 * unless flags has O_NONBLOCK (a regular file reads the same).  It
 * fills *sb.  -1 with *cause set: when path exists but is not a regular
 * file, errno is EINVAL and sb->st_mode says what it is (fsafe_type());
 * otherwise sb->st_mode is 0 and errno is open()'s.
 * fsafe_openat_regular() is the same for name under the folder dfd (or
 * AT_FDCWD); messages call it dir/name, or name when dir is NULL.
 */
#define FSAFE_PARENT_MODE	0755	/* the user must pass through */
struct stat;
int		 fsafe_mkdir(const char *path, mode_t mode, uid_t uid,
		    gid_t gid, char **cause);
int		 fsafe_opendir(const char *path, mode_t mode, uid_t uid,
		    char **cause);
int		 fsafe_open_regular(const char *path, int flags, struct stat *,
		    char **cause);
int		 fsafe_openat_regular(int dfd, const char *dir,
		    const char *name, int flags, struct stat *, char **cause);
const char	*fsafe_type(mode_t);		/* "a FIFO" */

#endif /* SIDECAR_H */
