/*
 * The configuration loader and parser, from the top down: src/conf_load.c,
 * nginx_conf.c, conf.c, conf_cert.c, conf_cluster.c, conf_parse.c and
 * conf_lex.c.  The input is written to sidecar.conf and nginx.conf in a
 * private folder, then read as the sidecar's file and as --nginx-conf;
 * whatever comes back is freed.
 *
 * include, nginx_config and friends resolve beside the file, but an
 * absolute pattern could send glob(3) over the whole disk and make every
 * run slow.  The harness is linked with --wrap=open,--wrap=glob: while a
 * configuration loads, only paths inside the private folder (and without
 * "..") open or glob; anything else fails as absent, which the parser
 * already reports as an error.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar.h"

#include "fuzz.h"

int	__real_open(const char *, int, ...);
int	__real_glob(const char *, int, int (*)(const char *, int), glob_t *);
int	__wrap_open(const char *, int, ...);
int	__wrap_glob(const char *, int, int (*)(const char *, int), glob_t *);

#define FUZZ_DIR_TEMPLATE "/dev/shm/fuzz-conf-XXXXXX"

static char	 fuzz_dir[sizeof(FUZZ_DIR_TEMPLATE)];
static char	 fuzz_sidecar[64], fuzz_nginx[64];
static int	 fuzz_confined;

static int
fuzz_inside(const char *path)
{
	size_t	 n = strlen(fuzz_dir);

	return strncmp(path, fuzz_dir, n) == 0 && path[n] == '/' &&
	    strstr(path, "/..") == NULL;
}

int
__wrap_open(const char *path, int flags, ...)
{
	va_list	 ap;
	mode_t	 mode = 0;

	if (flags & O_CREAT) {
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	if (fuzz_confined && !fuzz_inside(path)) {
		errno = ENOENT;
		return -1;
	}
	return __real_open(path, flags, mode);
}

int
__wrap_glob(const char *pattern, int flags, int (*errfunc)(const char *, int),
    glob_t *g)
{
	if (fuzz_confined && !fuzz_inside(pattern)) {
		memset(g, 0, sizeof(*g));
		return GLOB_NOMATCH;
	}
	return __real_glob(pattern, flags, errfunc, g);
}

static void
fuzz_write(const char *path, const uint8_t *data, size_t size)
{
	int	 fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1 || write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
}

static void
fuzz_load(const char *sidecar, const char *nginx)
{
	struct conf	*conf;
	char		*cause = NULL;

	fuzz_confined = 1;
	conf = conf_load_files(sidecar, nginx, &cause);
	fuzz_confined = 0;
	conf_free(conf);
	free(cause);
}

/* A folder of its own for each run: a crash leaves one behind at most. */
static void
fuzz_setup(void)
{
	memcpy(fuzz_dir, FUZZ_DIR_TEMPLATE, sizeof(fuzz_dir));
	if (mkdtemp(fuzz_dir) == NULL)
		abort();
	snprintf(fuzz_sidecar, sizeof(fuzz_sidecar), "%s/sidecar.conf",
	    fuzz_dir);
	snprintf(fuzz_nginx, sizeof(fuzz_nginx), "%s/nginx.conf", fuzz_dir);
}

static void
fuzz_cleanup(void)
{
	unlink(fuzz_sidecar);
	unlink(fuzz_nginx);
	rmdir(fuzz_dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	log_init(0);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 256 * 1024)
		return 0;
	fuzz_setup();
	fuzz_write(fuzz_sidecar, data, size);
	fuzz_write(fuzz_nginx, data, size);
	fuzz_load(fuzz_sidecar, NULL);
	fuzz_load(NULL, fuzz_nginx);
	fuzz_cleanup();
	return 0;
}
