/*
 * ngx_http_acme_module: nginx's side of acme-sidecar.
 *
 * The sidecar issues and renews certificates and publishes them, with the
 * pending HTTP-01 tokens and tls-alpn-01 validation certificates, in a
 * shared-memory segment (proto/acme_shm.h).  This module reads that
 * segment in every worker:
 *
 *   ngx_http_acme_module.c	directives, variables, the challenge handler
 *   ngx_http_acme_shm.c	mapping the segment and the reader protocol
 *   ngx_http_acme_ssl.c	the certificate callback and its per-worker
 *				cache of parsed certificates; tls-alpn-01
 *   ngx_http_acme_hello.h	what tls-alpn-01 reads of a raw ClientHello
 *
 * Nothing here writes to the segment, and nothing read from it is trusted
 * before it is bound-checked against the slot it was read from and
 * confirmed by the generation counter.  The file itself is trusted only
 * when its owner is the one configured (root by default) and nobody else
 * may write it.
 */
#ifndef NGX_HTTP_ACME_MODULE_H
#define NGX_HTTP_ACME_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#if !(NGX_HTTP_SSL)
#error ngx_http_acme_module needs nginx built with ngx_http_ssl_module
#endif

#include "acme_shm.h"
#include "acme_ident.h"
#include "ngx_http_acme_hello.h"

/* Caps on what one entry may hand us: bigger means a garbled segment. */
#define NGX_HTTP_ACME_MAX_PEM		(1024 * 1024)
#define NGX_HTTP_ACME_MAX_KEYAUTH	1024

/*
 * Key families.  An SSL_CTX holds one certificate of each, and OpenSSL
 * picks between them from the ClientHello, so a server may have one
 * acme_certificate of each family and no more.
 */
#define NGX_HTTP_ACME_EC		ACME_KEY_FAMILY_EC
#define NGX_HTTP_ACME_RSA		ACME_KEY_FAMILY_RSA
#define NGX_HTTP_ACME_NFAMILIES		ACME_KEY_FAMILY_MAX

/* Why a lookup found nothing, for the log. */
typedef enum {
	NGX_HTTP_ACME_FOUND = 0,
	NGX_HTTP_ACME_UNMAPPED,		/* no usable segment file yet */
	NGX_HTTP_ACME_EMPTY,		/* generation 0: nothing published */
	NGX_HTTP_ACME_ABSENT,		/* published, but not this key */
	NGX_HTTP_ACME_MALFORMED,	/* an entry points outside its slot */
	NGX_HTTP_ACME_BUSY,		/* the writer outran every retry */
	NGX_HTTP_ACME_NOMEM
} ngx_http_acme_status_e;

/* The segment as one worker sees it; each worker maps it on its own. */
typedef struct {
	ngx_str_t		 path;		/* NUL-terminated */
	uid_t			 owner;		/* who must own the file */
	ngx_uint_t		 owner_set;	/* owner= given */
	const u_char		*base;		/* NULL while unmapped */
	ngx_fd_t		 fd;		/* the mapped file's, if base */
	size_t			 size;		/* header.size when mapped */
	size_t			 mapped;	/* bytes mapped */
	dev_t			 dev;
	ino_t			 ino;
	time_t			 next_check;	/* stat(2) once a second */
	ngx_uint_t		 epoch;		/* bumped at every (re)map */
	ngx_uint_t		 complaint;	/* the problem last logged */
	time_t			 next_log;	/* log rate limit */
} ngx_http_acme_shm_t;

/* One certificate entry as a lookup found it. */
typedef struct {
	uint64_t		 serial;
	uint64_t		 generation;
	ngx_str_t		 chain;		/* copies, when asked for */
	ngx_str_t		 key;
} ngx_http_acme_shm_cert_t;

/* Parsed objects ready for SSL_use_cert_and_key(). */
typedef struct {
	X509			*x509;
	STACK_OF(X509)		*chain;
	EVP_PKEY		*pkey;
} ngx_http_acme_pair_t;

/*
 * One certificate id.  Servers that name the same id share it, and so
 * share each worker's parsed copy.
 */
typedef struct {
	ngx_str_t		 id;
	ngx_str_t		 issuer;
	ngx_array_t		*idents;	/* ngx_str_t, normalised */
	ngx_str_t		 profile;	/* profile=, or empty */
	ngx_int_t		 challenge;	/* challenge=, or -1 */
	ngx_uint_t		 family;	/* NGX_HTTP_ACME_EC or _RSA */
	u_char			*file;		/* its acme_certificate */
	ngx_uint_t		 line;

	/* Per worker: the parsed certificate and where it was seen. */
	ngx_http_acme_pair_t	 pair;
	time_t			 not_after;	/* of pair's leaf */
	uint64_t		 serial;
	uint64_t		 generation;
	ngx_uint_t		 epoch;
	ngx_uint_t		 stale;		/* the entry's serial is bad */
	uint64_t		 bad_serial;	/* the last one that failed */
	ngx_uint_t		 have_bad;
	time_t			 bad_retry;	/* no parse before then */
} ngx_http_acme_cert_t;

typedef struct {
	ngx_str_t		 cert_file;
	ngx_str_t		 key_file;
	ngx_str_t		 cert_value;	/* "data:" PEM, for variables */
	ngx_str_t		 key_value;
	ngx_http_acme_pair_t	 pair;
} ngx_http_acme_fallback_t;

/* The challenge types the sidecar answers (challenge, challenge=). */
#define NGX_HTTP_ACME_HTTP_01	0
#define NGX_HTTP_ACME_DNS_01	1
#define NGX_HTTP_ACME_TLS_ALPN_01 2

typedef struct {
	ngx_str_t		 name;
	ngx_str_t		 state_path;
	ngx_uint_t		 challenge;	/* NGX_HTTP_ACME_HTTP_01, ... */
	ngx_uint_t		 dns_publisher;	/* dns_hook or dns_update */
	ngx_uint_t		 seen;		/* once-only directives seen */
	u_char			*file;
	ngx_uint_t		 line;
} ngx_http_acme_issuer_t;

/* One acme_certificate directive of a server. */
typedef struct {
	ngx_str_t		 issuer;
	ngx_array_t		*listed;	/* NULL: use server_name */
	ngx_uint_t		 key_type;
	ngx_str_t		 profile;
	ngx_int_t		 challenge;	/* challenge=, or -1 */
	u_char			*file;
	ngx_uint_t		 line;
	ngx_http_acme_cert_t	*cert;		/* set when merged */
} ngx_http_acme_line_t;

typedef struct ngx_http_acme_srv_conf_s ngx_http_acme_srv_conf_t;

/*
 * A server whose certificate has IP identifiers, on one of its listen
 * addresses: a handshake without SNI that arrives at that address gets
 * it (TLS clients send no SNI for an address).
 */
typedef struct {
	struct sockaddr		*listen;	/* the listen address:port */
	socklen_t		 socklen;
	int			 family;	/* of addr: AF_INET, AF_INET6 */
	u_char			 addr[16];	/* the identifier, binary */
	ngx_http_acme_srv_conf_t *ascf;
} ngx_http_acme_addr_t;

typedef struct {
	ngx_array_t		 issuers;	/* ngx_http_acme_issuer_t */
	ngx_array_t		 certs;		/* ngx_http_acme_cert_t * */
	ngx_array_t		 addrs;		/* ngx_http_acme_addr_t */
	ngx_str_t		 zone_name;
	size_t			 zone_size;
	u_char			*zone_file;	/* acme_shared_zone, if any */
	ngx_uint_t		 zone_line;
	ngx_flag_t		 enabled;	/* any acme_* directive */
	ngx_http_acme_shm_t	 shm;
	SSL_CTX			*alpn_ctx;	/* tls-alpn-01 handshakes */
} ngx_http_acme_main_conf_t;

struct ngx_http_acme_srv_conf_s {
	ngx_http_acme_main_conf_t *amcf;
	ngx_http_acme_line_t	 lines[NGX_HTTP_ACME_NFAMILIES];
	ngx_uint_t		 nlines;	/* 0: no acme_certificate */
	ngx_http_acme_fallback_t *fallback;
	ngx_flag_t		 cache_set;	/* ssl_certificate_cache seen */

	/*
	 * The fast path: the server's SSL_CTX and, per worker, what this
	 * module put in it: one certificate per key family, and the one
	 * put there last, which every connection made since starts with as
	 * its current certificate.
	 */
	SSL_CTX			*ssl_ctx;
	X509			*ctx_x509[NGX_HTTP_ACME_NFAMILIES];
	X509			*ctx_last;
};

extern ngx_module_t	 ngx_http_acme_module;

/* ngx_http_acme_conf.c */
char		*ngx_http_acme_issuer_block(ngx_conf_t *, ngx_command_t *,
		    void *);
char		*ngx_http_acme_shared_zone(ngx_conf_t *, ngx_command_t *,
		    void *);
char		*ngx_http_acme_certificate(ngx_conf_t *, ngx_command_t *,
		    void *);
char		*ngx_http_acme_fallback(ngx_conf_t *, ngx_command_t *, void *);
#if (nginx_version < 1027004)
char		*ngx_http_acme_certificate_cache(ngx_conf_t *, ngx_command_t *,
		    void *);
#endif
void		*ngx_http_acme_create_main_conf(ngx_conf_t *);
char		*ngx_http_acme_init_main_conf(ngx_conf_t *, void *);
void		*ngx_http_acme_create_srv_conf(ngx_conf_t *);
char		*ngx_http_acme_merge_srv_conf(ngx_conf_t *, void *, void *);

/* ngx_http_acme_shm.c */
void		 ngx_http_acme_shm_init(ngx_http_acme_shm_t *, ngx_log_t *);
void		 ngx_http_acme_shm_close(ngx_http_acme_shm_t *);
ngx_int_t	 ngx_http_acme_shm_ready(ngx_http_acme_shm_t *, ngx_log_t *);
uint64_t	 ngx_http_acme_shm_generation(ngx_http_acme_shm_t *);
ngx_http_acme_status_e ngx_http_acme_shm_cert(ngx_http_acme_shm_t *,
		    ngx_str_t *, const uint64_t *, ngx_pool_t *,
		    ngx_http_acme_shm_cert_t *);
ngx_http_acme_status_e ngx_http_acme_shm_token(ngx_http_acme_shm_t *,
		    ngx_str_t *, ngx_pool_t *, ngx_str_t *);
ngx_http_acme_status_e ngx_http_acme_shm_alpn(ngx_http_acme_shm_t *,
		    ngx_str_t *, ngx_pool_t *, ngx_str_t *, ngx_str_t *);
const char	*ngx_http_acme_status_text(ngx_http_acme_status_e);
ngx_int_t	 ngx_http_acme_shm_log_allowed(ngx_http_acme_shm_t *);

/* ngx_http_acme_ssl.c */
ngx_int_t	 ngx_http_acme_ssl_load(ngx_conf_t *,
		    ngx_http_acme_fallback_t *);
void		 ngx_http_acme_ssl_pair_free(ngx_http_acme_pair_t *);
ngx_http_acme_pair_t *ngx_http_acme_ssl_current(ngx_http_acme_main_conf_t *,
		    ngx_http_acme_cert_t *, ngx_log_t *,
		    ngx_http_acme_status_e *);
int		 ngx_http_acme_ssl_cert_cb(ngx_ssl_conn_t *, void *);
ngx_int_t	 ngx_http_acme_ssl_addresses(ngx_conf_t *,
		    ngx_http_acme_main_conf_t *);
ngx_int_t	 ngx_http_acme_ssl_alpn_init(ngx_conf_t *,
		    ngx_http_acme_main_conf_t *);

#endif /* NGX_HTTP_ACME_MODULE_H */
