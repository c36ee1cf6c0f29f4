/*
 * acmectl: the command-line client of acme-sidecar's control API.
 *
 * The control API (HTTP + JSON on a Unix socket) is not part of this
 * release yet; until it is, acmectl only reports its version, so scripts
 * that probe for it get a clear answer instead of a silent success.
 */
#include <stdio.h>
#include <string.h>

#define ACMECTL_VERSION "0.1.0"

int
main(int argc, char *argv[])
{
	if (argc == 2 && (strcmp(argv[1], "-V") == 0 ||
	    strcmp(argv[1], "--version") == 0)) {
		printf("acmectl %s\n", ACMECTL_VERSION);
		return 0;
	}
	fprintf(stderr, "acmectl: the control API is not available in this "
	    "release of acme-sidecar\n");
	return 1;
}
