/*
 * What every harness shares.  The daemon logs to stderr, which at tens of
 * thousands of runs a second would be most of the time spent: the stream
 * goes to /dev/null unless FUZZ_VERBOSE is set.  Only the FILE is swapped,
 * so libFuzzer's and the sanitizers' reports, written to descriptor 2,
 * still come out.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdio.h>
#include <stdlib.h>

static void
fuzz_quiet(void)
{
	FILE	*f;

	if (getenv("FUZZ_VERBOSE") != NULL)
		return;
	if ((f = fopen("/dev/null", "w")) == NULL)
		abort();
	stderr = f;
}

#endif /* FUZZ_H */
