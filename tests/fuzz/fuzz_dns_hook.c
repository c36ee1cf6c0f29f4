/*
 * A dns_hook's output (src/dns_hook.c): the line splitter and the cap
 * on what is logged, fed as the pipe would feed them, in reads of any
 * size, and the cause built from the last line.
 *
 * dns_hook.c is #included to reach its static functions; no process
 * runs.  Input: byte 0 sets the read size (1 to 256 bytes), byte 1 how
 * many times the rest is fed (1 to 32, so the 64 KiB cap is crossed),
 * the rest is the output, any byte.
 */
#include "../../src/dns_hook.c"

#include "fuzz.h"

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
	struct dns_hook_job	*dj;
	char			 cause[DNS_HOOK_LAST_MAX + 32];
	size_t			 chunk, reps, i, off, n, total;

	if (size < 2)
		return 0;
	chunk = (size_t)data[0] + 1;
	reps = data[1] % 32 + 1;
	data += 2;
	size -= 2;
	dj = xcalloc(1, sizeof(*dj));
	dj->dj_argv[0] = xstrdup("/hook");
	dj->dj_argv[1] = xstrdup("add");
	dj->dj_argv[2] = xstrdup("_acme-challenge.example.test.");
	dj->dj_out = dj->dj_pidfd = -1;
	total = 0;
	for (i = 0; i < reps; i++) {
		for (off = 0; off < size; off += n) {
			n = size - off < chunk ? size - off : chunk;
			dns_hook_take(dj, (const char *)data + off, n);
			total += n;
		}
	}
	if (dj->dj_linelen > 0)
		dns_hook_line(dj, 0);
	/* Every byte is logged or counted, once, newlines included. */
	if (dj->dj_logged + dj->dj_dropped != total ||
	    dj->dj_logged > DNS_HOOK_LOG_MAX + DNS_HOOK_LINE_MAX + 1)
		abort();
	if (strlen(dj->dj_last) > DNS_HOOK_LAST_MAX)
		abort();
	dns_hook_cause_last(dj, cause, sizeof(cause));
	for (i = 0; cause[i] != '\0'; i++)
		if ((unsigned char)cause[i] < 0x20 || cause[i] == 0x7f)
			abort();
	dns_hook_free(dj);
	return 0;
}
