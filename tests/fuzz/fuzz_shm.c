/*
 * The nginx module's segment reader (src/nginx/ngx_http_acme_shm.c), the
 * code every worker runs on each TLS handshake and challenge request: map
 * the file, check the header, follow the reader protocol, look a
 * certificate id or a token up and copy out what the entry points at.
 *
 * The file is compiled as it is, with nginx's own headers as
 * scripts/build-nginx-module configured them (build/nginx-src), and
 * #included so the harness sees its types.  Of nginx itself it needs four
 * symbols, given below: the cached time, a pool allocation (malloc, freed
 * after each run), and the logging calls (which drop the text).
 *
 * Input: byte 0 is a key length n, then n bytes of key, then the segment
 * file as the sidecar would have written it.  The key is looked up as a
 * certificate id (with and without a known serial), as a token and as a
 * tls-alpn-01 SNI.  It is also read as a ClientHello's raw ALPN and SNI
 * extensions (ngx_http_acme_hello.h), as the module's ClientHello
 * callback reads them, and the name found there is looked up too.
 *
 * Then the file is cut short under the mapping, as anyone able to write
 * it may do, at a few points (nothing, a header's worth, half of it, all
 * but one byte), and the same lookups run again on the same mapping: a
 * worker that touched a page past the new end would die with SIGBUS.
 */
#include "../../src/nginx/ngx_http_acme_shm.c"

#include <stdint.h>
#include <stdlib.h>

#include "fuzz.h"

#define FUZZ_MAX_ALLOCS	16

static ngx_time_t	 fuzz_time;
volatile ngx_time_t	*ngx_cached_time = &fuzz_time;

static void		*fuzz_allocs[FUZZ_MAX_ALLOCS];
static size_t		 fuzz_nallocs;
static char		 fuzz_dir[] = "/dev/shm/fuzz-shm-XXXXXX";
static char		 fuzz_path[64];

void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
	(void)pool;
	if (fuzz_nallocs == FUZZ_MAX_ALLOCS)
		abort();	/* more copies than any lookup makes */
	if ((fuzz_allocs[fuzz_nallocs] = malloc(size)) == NULL)
		return NULL;
	return fuzz_allocs[fuzz_nallocs++];
}

u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
	(void)last;
	(void)fmt;
	(void)args;
	return buf;
}

void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
	(void)level;
	(void)log;
	(void)err;
	(void)fmt;
}

static void
fuzz_cleanup(void)
{
	unlink(fuzz_path);
	rmdir(fuzz_dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	if (mkdtemp(fuzz_dir) == NULL)
		abort();
	snprintf(fuzz_path, sizeof(fuzz_path), "%s/zone", fuzz_dir);
	atexit(fuzz_cleanup);
	return 0;
}

static void
fuzz_write(const uint8_t *data, size_t size)
{
	int	 fd;

	if ((fd = open(fuzz_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1 || write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
}

/* What the ClientHello callback reads of the key as raw extensions. */
static void
fuzz_hello(ngx_http_acme_shm_t *shm, ngx_str_t *key)
{
	ngx_pool_t	*pool = (ngx_pool_t *)fuzz_allocs;
	ngx_str_t	 sni, cert, pkey;
	char		 name[ACME_HELLO_SNI_MAX + 1];

	(void)acme_hello_offers_acme_tls(key->data, key->len);
	if ((sni.len = acme_hello_sni(key->data, key->len, name)) == 0)
		return;
	if (sni.len > ACME_HELLO_SNI_MAX || strlen(name) != sni.len)
		abort();
	sni.data = (u_char *)name;
	(void)ngx_http_acme_shm_alpn(shm, &sni, pool, &cert, &pkey);
}

/* Every lookup a worker makes, on whatever is mapped now. */
static void
fuzz_lookups(ngx_http_acme_shm_t *shm, ngx_log_t *log, ngx_str_t *key)
{
	ngx_http_acme_shm_cert_t	 cert;
	ngx_str_t			 keyauth, vcert, vkey;
	ngx_pool_t			*pool = (ngx_pool_t *)fuzz_allocs;
	uint64_t			 serial;

	if (ngx_http_acme_shm_ready(shm, log) != NGX_OK)
		return;
	(void)ngx_http_acme_shm_generation(shm);
	if (ngx_http_acme_shm_cert(shm, key, NULL, pool, &cert) ==
	    NGX_HTTP_ACME_FOUND) {
		serial = cert.serial;
		(void)ngx_http_acme_shm_cert(shm, key, &serial, pool, &cert);
	}
	(void)ngx_http_acme_shm_token(shm, key, pool, &keyauth);
	(void)ngx_http_acme_shm_alpn(shm, key, pool, &vcert, &vkey);
	fuzz_hello(shm, key);
	(void)ngx_http_acme_status_text(NGX_HTTP_ACME_BUSY);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ngx_http_acme_shm_t		 shm;
	ngx_str_t			 key;
	ngx_log_t			 log;
	size_t				 i, seg, cuts[4];

	if (size < 1 || (size_t)data[0] + 1 > size)
		return 0;
	key.len = data[0];
	key.data = (u_char *)malloc(key.len + 1);
	memcpy(key.data, data + 1, key.len);
	key.data[key.len] = '\0';
	fuzz_write(data + 1 + key.len, size - 1 - key.len);

	memset(&log, 0, sizeof(log));
	memset(&shm, 0, sizeof(shm));
	shm.path.data = (u_char *)fuzz_path;
	shm.path.len = strlen(fuzz_path);
	shm.owner = geteuid();
	fuzz_time.sec = time(NULL);
	ngx_http_acme_shm_init(&shm, &log);
	fuzz_lookups(&shm, &log, &key);
	seg = size - 1 - key.len;
	cuts[0] = seg - (seg > 0);
	cuts[1] = seg / 2;
	cuts[2] = sizeof(struct acme_shm_header);
	cuts[3] = 0;
	for (i = 0; i < 4 && shm.base != NULL; i++) {
		if (cuts[i] >= seg || truncate(fuzz_path, (off_t)cuts[i]) == -1)
			continue;
		fuzz_lookups(&shm, &log, &key);
	}
	ngx_http_acme_shm_close(&shm);
	for (i = 0; i < fuzz_nallocs; i++)
		free(fuzz_allocs[i]);
	fuzz_nallocs = 0;
	free(key.data);
	return 0;
}
