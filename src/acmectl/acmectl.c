/*
 * acmectl: the command-line client of acme-sidecar's control API
 * (proto/control-api.md).
 *
 * This file holds main, the options and the commands, one function
 * each, dispatched from a table.  ctl_http.c speaks HTTP over the
 * daemon's Unix socket, ctl_out.c prints, ctl_wait.c follows the
 * orders that add and renew start.
 */
#include <sys/types.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl.h"

#define CTL_DEFAULT_SOCKET	"/run/acme-sidecar/control.sock"
#define CTL_SOCKET_ENV		"ACME_SIDECAR_SOCKET"

/* Waiting for an order: --timeout, by default and at the most. */
#define CTL_WAIT_DEFAULT	300
#define CTL_WAIT_MAX		86400

/* Usage errors (bad option, missing argument). */
#define CTL_EXIT_USAGE		2

/* Options, as bits: which were given, and which a command takes. */
#define CTL_OPT_JSON		0x01
#define CTL_OPT_KEY		0x02
#define CTL_OPT_REASON		0x04
#define CTL_OPT_ALL		0x08
#define CTL_OPT_WAIT		0x10	/* --no-wait, --timeout */
#define CTL_OPT_PROFILE		0x20
#define CTL_OPT_YES		0x40
#define CTL_OPT_CHALLENGE	0x80

/* The longest issuer name typed back to confirm a deactivation. */
#define CTL_CONFIRM_MAX		256

struct ctl_cmd {
	const char	*c_name;
	const char	*c_args;	/* for usage */
	const char	*c_help;	/* one line, for -h and --help */
	int		 c_minargs;
	int		 c_maxargs;	/* -1: any number */
	int		 c_opts;	/* CTL_OPT_* it takes */
	int		 (*c_run)(const struct ctl_opts *, int, char **,
			     char **);
};

static int	ctl_cmd_status(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_list(const struct ctl_opts *, int, char **, char **);
static int	ctl_cmd_show(const struct ctl_opts *, int, char **, char **);
static int	ctl_cmd_add(const struct ctl_opts *, int, char **, char **);
static int	ctl_cmd_remove(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_renew(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_revoke(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_reload(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_events(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_metrics(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_account(const struct ctl_opts *, int, char **,
		    char **);

static const struct ctl_cmd ctl_cmds[] = {
	{ "status",	"", "the daemon: version, uptime, certificates, "
			"issuers, zone", 0, 0, CTL_OPT_JSON,
			ctl_cmd_status },
	{ "list",	"", "every certificate: state, expiry, next renewal",
			0, 0, CTL_OPT_JSON, ctl_cmd_list },
	{ "show",	" ID", "one certificate", 1, 1, CTL_OPT_JSON,
			ctl_cmd_show },
	{ "add",	" [--key TYPE] [--profile NAME] [--challenge TYPE] "
			"[--no-wait] [--timeout SECONDS] ISSUER NAME...",
			"manage a new certificate and order it", 2, -1,
			CTL_OPT_JSON|CTL_OPT_KEY|CTL_OPT_PROFILE|
			CTL_OPT_CHALLENGE|CTL_OPT_WAIT, ctl_cmd_add },
	{ "remove",	" ID", "stop managing a certificate added with add",
			1, 1, CTL_OPT_JSON, ctl_cmd_remove },
	{ "renew",	" [--no-wait] [--timeout SECONDS] ID|--all",
			"order ID again now, or every idle certificate", 0, 1,
			CTL_OPT_JSON|CTL_OPT_ALL|CTL_OPT_WAIT, ctl_cmd_renew },
	{ "revoke",	" [--reason R] ID", "revoke the certificate in use "
			"and order a new one", 1, 1,
			CTL_OPT_JSON|CTL_OPT_REASON, ctl_cmd_revoke },
	{ "reload",	"", "read the configuration again (as SIGHUP)", 0, 0,
			CTL_OPT_JSON, ctl_cmd_reload },
	{ "events",	"", "print events as they happen", 0, 0, CTL_OPT_JSON,
			ctl_cmd_events },
	/* Prometheus text has no JSON form; --json is refused. */
	{ "metrics",	"", "the Prometheus metrics, as text", 0, 0, 0,
			ctl_cmd_metrics },
	{ "account",	" show|rollover [--key TYPE]|deactivate [--yes] "
			"ISSUER", "show an issuer's account, roll its key, "
			"deactivate it", 2, 2,
			CTL_OPT_JSON|CTL_OPT_KEY|CTL_OPT_YES,
			ctl_cmd_account },
};

static const struct {
	int		 co_bit;
	const char	*co_name;
} ctl_optnames[] = {
	{ CTL_OPT_JSON,		"--json" },
	{ CTL_OPT_KEY,		"--key" },
	{ CTL_OPT_REASON,	"--reason" },
	{ CTL_OPT_ALL,		"--all" },
	{ CTL_OPT_WAIT,		"--no-wait or --timeout" },
	{ CTL_OPT_PROFILE,	"--profile" },
	{ CTL_OPT_YES,		"--yes" },
	{ CTL_OPT_CHALLENGE,	"--challenge" },
};

/*
 * What each option does, for -h and COMMAND --help: a command's help
 * lists the rows of the bits its table row takes, so the two agree.
 */
static const struct {
	int		 oh_bit;
	const char	*oh_usage;
	const char	*oh_help;
} ctl_opthelp[] = {
	{ CTL_OPT_JSON,		"--json", "print the API's JSON" },
	{ CTL_OPT_KEY,		"--key TYPE", "ecdsa:256 (default), ecdsa:384|521, "
				"rsa:2048|3072|4096" },
	{ CTL_OPT_PROFILE,	"--profile NAME", "the CA's profile for it" },
	{ CTL_OPT_CHALLENGE,	"--challenge TYPE", "http-01, dns-01 or "
				"tls-alpn-01 (default: the issuer's)" },
	{ CTL_OPT_WAIT,		"--no-wait", "return once the order has "
				"started" },
	{ CTL_OPT_WAIT,		"--timeout SECONDS", "stop waiting (default 300); the order "
				"goes on" },
	{ CTL_OPT_ALL,		"--all", "renew every certificate with no order under "
				"way" },
	{ CTL_OPT_REASON,	"--reason R", "an RFC 5280 reason, by name or "
				"code" },
	{ CTL_OPT_YES,		"--yes", "deactivate without asking to type ISSUER "
				"back" },
};

/* ---------------------------------------------------------------- commands */

static int
ctl_cmd_status(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	json_t		*j = NULL, *certs, *states, *zone, *v;
	const char	*state;
	char		 b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
	char		 b7[32];
	int		 any = 0, rc = -1;

	(void)argc;
	(void)argv;
	if (ctl_call(o->o_socket, "GET", "/v1/status", NULL, &j, cause) == -1)
		goto out;
	if (o->o_json) {
		ctl_print_json(j);
		rc = 0;
		goto out;
	}
	certs = json_object_get(j, "certificates");
	states = json_object_get(certs, "by_state");
	zone = json_object_get(j, "shared_zone");
	printf("version       %s\n", ctl_field(j, "version", b1, sizeof(b1)));
	printf("uptime        ");
	ctl_print_uptime(json_integer_value(json_object_get(j, "uptime")));
	printf("certificates  %s total, %s valid\n",
	    ctl_field(certs, "total", b1, sizeof(b1)),
	    ctl_field(certs, "valid", b2, sizeof(b2)));
	/* Only the states something is in: ten zeros would hide them. */
	json_object_foreach(states, state, v) {
		if (json_integer_value(v) == 0)
			continue;
		printf("  %-11s %s\n", state, ctl_scalar(v, b1, sizeof(b1)));
		any = 1;
	}
	if (!any)
		printf("  (none)\n");
	printf("issuers\n");
	ctl_print_issuers(json_object_get(j, "issuers"));
	printf("shared zone   generation %s, %s of %s bytes used (the "
	    "image: %s), %s certificates, %s tokens, %s failed publishes%s\n",
	    ctl_field(zone, "generation", b1, sizeof(b1)),
	    ctl_field(zone, "used", b2, sizeof(b2)),
	    ctl_field(zone, "size", b7, sizeof(b7)),
	    ctl_field(zone, "image_size", b3, sizeof(b3)),
	    ctl_field(zone, "certificates", b4, sizeof(b4)),
	    ctl_field(zone, "tokens", b5, sizeof(b5)),
	    ctl_field(zone, "failed_publishes", b6, sizeof(b6)),
	    json_is_true(json_object_get(zone, "full")) ?
	    "; FULL, nginx serves the generation above" : "");
	ctl_print_cluster(json_object_get(j, "cluster"));
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/* The "certificates" array of a list answer. */
static json_t *
ctl_cert_array(const struct ctl_opts *o, json_t *j, char **cause)
{
	json_t	*a;

	if (!json_is_array(a = json_object_get(j, "certificates"))) {
		*cause = ctl_xasprintf("%s: GET /v1/certificates: no "
		    "\"certificates\" array", o->o_socket);
		return NULL;
	}
	return a;
}

static int
ctl_cmd_list(const struct ctl_opts *o, int argc, char **argv, char **cause)
{
	json_t	*j = NULL, *a;
	int	 rc = -1;

	(void)argc;
	(void)argv;
	if (ctl_call(o->o_socket, "GET", "/v1/certificates", NULL, &j,
	    cause) == -1)
		goto out;
	if (o->o_json) {
		ctl_print_json(j);
		rc = 0;
		goto out;
	}
	if ((a = ctl_cert_array(o, j, cause)) == NULL)
		goto out;
	ctl_print_certs(a);
	rc = 0;
out:
	json_decref(j);
	return rc;
}

static int
ctl_cmd_show(const struct ctl_opts *o, int argc, char **argv, char **cause)
{
	json_t	*j = NULL;
	char	*path = ctl_cert_path(argv[0], "");
	int	 rc = -1;

	(void)argc;
	if (ctl_call(o->o_socket, "GET", path, NULL, &j, cause) == -1)
		goto out;
	ctl_output_cert(o, j);
	rc = 0;
out:
	json_decref(j);
	free(path);
	return rc;
}

/* POST /v1/certificates, then follow the order unless --no-wait. */
static int
ctl_cmd_add(const struct ctl_opts *o, int argc, char **argv, char **cause)
{
	json_t	*req, *ids, *j = NULL;
	int	 i, rc = -1;

	ids = json_array();
	for (i = 1; i < argc; i++)
		json_array_append_new(ids, json_string(argv[i]));
	req = json_pack("{s:s,s:o}", "issuer", argv[0], "identifiers", ids);
	if (req == NULL)
		ctl_fatalx("%s: json_pack failed", __func__);
	if (o->o_key != NULL)
		json_object_set_new(req, "key", json_string(o->o_key));
	if (o->o_profile != NULL)
		json_object_set_new(req, "profile", json_string(o->o_profile));
	if (o->o_challenge != NULL)
		json_object_set_new(req, "challenge",
		    json_string(o->o_challenge));
	if (ctl_call(o->o_socket, "POST", "/v1/certificates", req, &j,
	    cause) == -1)
		goto out;
	if (o->o_nowait)
		ctl_output_cert(o, j);
	else if (ctl_wait_one(o, j, 0, cause) == -1)
		goto out;
	rc = 0;
out:
	json_decref(j);
	json_decref(req);
	return rc;
}

static int
ctl_cmd_remove(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	json_t	*j = NULL;
	char	*path = ctl_cert_path(argv[0], ""), buf[32];
	int	 rc = -1;

	(void)argc;
	if (ctl_call(o->o_socket, "DELETE", path, NULL, &j, cause) == -1)
		goto out;
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("deleted %s\n", ctl_field(j, "deleted", buf,
		    sizeof(buf)));
	rc = 0;
out:
	json_decref(j);
	free(path);
	return rc;
}

/* POST renew for one id; *out is the 202's certificate. */
static int
ctl_renew_start(const struct ctl_opts *o, const char *id, json_t **out,
    char **cause)
{
	char	*path = ctl_cert_path(id, "/renew");
	int	 rc;

	rc = ctl_call(o->o_socket, "POST", path, NULL, out, cause);
	free(path);
	return rc;
}

static int
ctl_renew_one(const struct ctl_opts *o, const char *id, char **cause)
{
	json_t	*j = NULL;
	char	 b1[32], b2[32];
	int	 rc = -1;

	if (ctl_renew_start(o, id, &j, cause) == -1)
		goto out;
	if (!o->o_nowait) {
		rc = ctl_wait_one(o, j, 1, cause);
		goto out;
	}
	/* The answer is 202: the order has started, not finished. */
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("%s: renewal started (state %s); see acmectl show %s\n",
		    ctl_field(j, "id", b1, sizeof(b1)),
		    ctl_field(j, "state", b2, sizeof(b2)), id);
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/*
 * Start a renewal of every certificate with no order under way; the
 * others are named on stderr and left alone.  Each started one is a
 * ctl_wait in *ws; a refusal is reported and counted in *refused.
 */
static int
ctl_renew_start_all(const struct ctl_opts *o, struct ctl_wait **ws,
    size_t *n, size_t *refused, char **cause)
{
	json_t		*j = NULL, *a, *ce, *started;
	const char	*id, *state;
	char		*why;
	size_t		 i;
	int		 rc = -1, r;

	if (ctl_call(o->o_socket, "GET", "/v1/certificates", NULL, &j,
	    cause) == -1)
		goto out;
	if ((a = ctl_cert_array(o, j, cause)) == NULL)
		goto out;
	*ws = ctl_xreallocarray(NULL, json_array_size(a) + 1, sizeof(**ws));
	json_array_foreach(a, i, ce) {
		id = json_string_value(json_object_get(ce, "id"));
		state = json_string_value(json_object_get(ce, "state"));
		if (id == NULL || state == NULL)
			continue;
		if (strcmp(state, "idle") != 0 &&
		    strcmp(state, "backoff") != 0) {
			fprintf(stderr, "%s: skipped, an order is under way "
			    "(%s)\n", id, state);
			continue;
		}
		if (ctl_renew_start(o, id, &started, &why) == -1) {
			fprintf(stderr, "acmectl: %s: %s\n", id, why);
			free(why);
			(*refused)++;
			continue;
		}
		r = ctl_wait_init(&(*ws)[*n], started, 1, cause);
		json_decref(started);
		if (r == -1)
			goto out;
		(*n)++;
	}
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/* The certificates renewed, as list prints them, or their JSON. */
static void
ctl_renew_output(const struct ctl_opts *o, struct ctl_wait *ws, size_t n)
{
	json_t	*a, *j;
	size_t	 i;

	a = json_array();
	for (i = 0; i < n; i++)
		json_array_append(a, ws[i].w_cert);
	if (o->o_json) {
		j = json_pack("{s:o}", "certificates", a);
		ctl_print_json(j);
		json_decref(j);
	} else {
		ctl_print_certs(a);
		json_decref(a);
	}
}

static int
ctl_renew_all(const struct ctl_opts *o, char **cause)
{
	struct ctl_wait	*ws = NULL;
	size_t		 n = 0, refused = 0, failed, i;
	char		*why;
	int		 rc = -1;

	if (ctl_renew_start_all(o, &ws, &n, &refused, cause) == -1)
		goto out;
	if (!o->o_nowait && ctl_wait_run(o, ws, n, 1, cause) == -1)
		goto out;
	failed = refused;
	for (i = 0; i < n; i++) {
		if (ws[i].w_done != -1)
			continue;
		why = ctl_wait_error(&ws[i]);
		fprintf(stderr, "acmectl: %s\n", why);
		free(why);
		failed++;
	}
	ctl_renew_output(o, ws, n);
	if (failed > 0) {
		*cause = ctl_xasprintf("%zu of %zu renewals failed", failed,
		    n + refused);
		goto out;
	}
	rc = 0;
out:
	for (i = 0; i < n; i++)
		ctl_wait_free(&ws[i]);
	free(ws);
	return rc;
}

static int
ctl_cmd_renew(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	(void)argc;
	if (o->o_all)
		return ctl_renew_all(o, cause);
	return ctl_renew_one(o, argv[0], cause);
}

/* A reason by code is sent as a number, by name as a string. */
static json_t *
ctl_revoke_body(const char *reason)
{
	const char	*p;

	if (reason == NULL)
		return NULL;
	for (p = reason; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p))
			break;
	}
	if (*p == '\0' && p - reason <= 3)
		return json_pack("{s:I}", "reason",
		    (json_int_t)strtol(reason, NULL, 10));
	return json_pack("{s:s}", "reason", reason);
}

static int
ctl_cmd_revoke(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	json_t	*req, *j = NULL, *ce;
	char	*path = ctl_cert_path(argv[0], "/revoke");
	char	 b1[32], b2[32], b3[32];
	int	 rc = -1;

	(void)argc;
	req = ctl_revoke_body(o->o_reason);
	if (ctl_call(o->o_socket, "POST", path, req, &j, cause) == -1)
		goto out;
	ce = json_object_get(j, "certificate");
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("%s: revoked (reason %s); a replacement is being "
		    "ordered (state %s)\n",
		    ctl_field(j, "revoked", b1, sizeof(b1)),
		    ctl_field(j, "reason", b2, sizeof(b2)),
		    ctl_field(ce, "state", b3, sizeof(b3)));
	rc = 0;
out:
	json_decref(j);
	json_decref(req);
	free(path);
	return rc;
}

static int
ctl_cmd_reload(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	json_t	*j = NULL;
	char	 buf[32];
	int	 rc = -1;

	(void)argc;
	(void)argv;
	if (ctl_call(o->o_socket, "POST", "/v1/reload", NULL, &j,
	    cause) == -1)
		goto out;
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("reloaded: %s certificates managed\n",
		    ctl_field(j, "certificates", buf, sizeof(buf)));
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/* One event on stdout at once, as it came (--json) or as a line. */
static int
ctl_show_event(json_t *ev, const char *line, size_t len, void *arg,
    char **cause)
{
	const struct ctl_opts	*o = arg;

	if (o->o_json) {
		fwrite(line, 1, len, stdout);
		putchar('\n');
	} else
		ctl_print_event(ev);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		*cause = ctl_xasprintf("stdout: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Print events until the daemon ends the stream (exit 0). */
static int
ctl_cmd_events(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	(void)argc;
	(void)argv;
	return ctl_events(o->o_socket, ctl_show_event, (void *)o, cause);
}

/* The Prometheus text, as the daemon sent it. */
static int
ctl_cmd_metrics(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	struct ctl_response	 rs;
	char			*buf = NULL;
	int			 rc = -1;

	(void)argc;
	(void)argv;
	if (ctl_exchange(o->o_socket, "GET", "/metrics", NULL, &buf, &rs,
	    cause) == -1)
		goto out;
	if (memchr(rs.rs_body, '\0', rs.rs_bodylen) != NULL) {
		*cause = ctl_xasprintf("%s: GET /metrics: a NUL byte in the "
		    "text", o->o_socket);
		goto out;
	}
	fwrite(rs.rs_body, 1, rs.rs_bodylen, stdout);
	rc = 0;
out:
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- account */

static int
ctl_account_show(const struct ctl_opts *o, const char *issuer, char **cause)
{
	json_t	*j = NULL;
	char	*path = ctl_issuer_path(issuer, "/account");
	int	 rc = -1;

	if (ctl_call(o->o_socket, "GET", path, NULL, &j, cause) == -1)
		goto out;
	ctl_output_account(o, j);
	rc = 0;
out:
	json_decref(j);
	free(path);
	return rc;
}

static int
ctl_account_rollover(const struct ctl_opts *o, const char *issuer,
    char **cause)
{
	json_t	*req = NULL, *j = NULL;
	char	*path = ctl_issuer_path(issuer, "/account/key-change");
	char	 b1[32], b2[32], b3[32];
	int	 rc = -1;

	if (o->o_key != NULL)
		req = json_pack("{s:s}", "key", o->o_key);
	if (ctl_call(o->o_socket, "POST", path, req, &j, cause) == -1)
		goto out;
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("%s: account %s rolled over to a new %s key, "
		    "thumbprint %s\n", issuer, ctl_field(j, "url", b1,
		    sizeof(b1)), ctl_field(j, "key_type", b2, sizeof(b2)),
		    ctl_field(j, "thumbprint", b3, sizeof(b3)));
	rc = 0;
out:
	json_decref(j);
	json_decref(req);
	free(path);
	return rc;
}

/*
 * Deactivation cannot be undone: the issuer's name must be typed back on
 * a terminal, or --yes given.  Without a terminal there is nobody to
 * ask, so it is refused.
 */
static int
ctl_account_confirm(const struct ctl_opts *o, const char *issuer,
    char **cause)
{
	char	 line[CTL_CONFIRM_MAX];
	size_t	 len;

	if (o->o_yes)
		return 0;
	if (!isatty(STDIN_FILENO)) {
		*cause = ctl_xasprintf("account deactivate %s: deactivating an "
		    "account cannot be undone; stdin is not a terminal to "
		    "confirm on, so pass --yes", issuer);
		return -1;
	}
	fprintf(stderr, "Deactivating the account of issuer \"%s\" cannot be "
	    "undone: the CA never takes it back, and the issuer orders\n"
	    "nothing more until a new account is registered.  Type the "
	    "issuer's name to confirm: ", issuer);
	fflush(stderr);
	if (fgets(line, sizeof(line), stdin) == NULL)
		line[0] = '\0';
	len = strcspn(line, "\r\n");
	line[len] = '\0';
	if (strcmp(line, issuer) != 0) {
		*cause = ctl_xasprintf("account deactivate %s: not confirmed; "
		    "nothing was done", issuer);
		return -1;
	}
	return 0;
}

static int
ctl_account_deactivate(const struct ctl_opts *o, const char *issuer,
    char **cause)
{
	json_t	*j = NULL;
	char	*path = ctl_issuer_path(issuer, "/account/deactivate");
	char	 buf[32];
	int	 rc = -1;

	if (ctl_account_confirm(o, issuer, cause) == -1)
		goto out;
	if (ctl_call(o->o_socket, "POST", path, NULL, &j, cause) == -1)
		goto out;
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("%s: account %s deactivated; the issuer orders nothing "
		    "more\n", issuer, ctl_field(j, "url", buf, sizeof(buf)));
	rc = 0;
out:
	json_decref(j);
	free(path);
	return rc;
}

/* account show|rollover|deactivate ISSUER */
static int
ctl_cmd_account(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	const char	*sub = argv[0], *issuer = argv[1];

	(void)argc;
	if (strcmp(sub, "show") == 0)
		return ctl_account_show(o, issuer, cause);
	if (strcmp(sub, "rollover") == 0)
		return ctl_account_rollover(o, issuer, cause);
	return ctl_account_deactivate(o, issuer, cause);
}

/* account's subcommand, and the options it takes: 0, or -1 (usage). */
static int
ctl_check_account(const struct ctl_opts *o, const char *sub)
{
	if (strcmp(sub, "show") != 0 && strcmp(sub, "rollover") != 0 &&
	    strcmp(sub, "deactivate") != 0) {
		fprintf(stderr, "acmectl: account: unknown \"%s\": show, "
		    "rollover or deactivate\n", sub);
		return -1;
	}
	if ((o->o_given & CTL_OPT_KEY) && strcmp(sub, "rollover") != 0) {
		fprintf(stderr, "acmectl: account %s does not take --key\n",
		    sub);
		return -1;
	}
	if ((o->o_given & CTL_OPT_YES) && strcmp(sub, "deactivate") != 0) {
		fprintf(stderr, "acmectl: account %s does not take --yes\n",
		    sub);
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- main */

static void
ctl_usage_line(FILE *f, const char *usage, const char *help)
{
	/* A long one gets a line of its own, the text under the others'. */
	if (strlen(usage) >= 20)
		fprintf(f, "  %s\n  %-20s%s\n", usage, "", help);
	else
		fprintf(f, "  %-20s%s\n", usage, help);
}

static void
ctl_usage_socket(FILE *f)
{
	ctl_usage_line(f, "-s socket", "the control socket (default: $"
	    CTL_SOCKET_ENV ",");
	ctl_usage_line(f, "", "else " CTL_DEFAULT_SOCKET ")");
}

static void
ctl_usage(FILE *f)
{
	size_t	i;

	fprintf(f, "usage: acmectl [-hV] [--json] [-s socket] command "
	    "[arguments]\n\ncommands:\n");
	for (i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
		ctl_usage_line(f, ctl_cmds[i].c_name, ctl_cmds[i].c_help);
	fprintf(f, "\nadd and renew wait for the order to end, showing its "
	    "progress on stderr,\nthen print the certificate; a failed "
	    "order exits 1 with its error.\n\noptions:\n");
	ctl_usage_socket(f);
	for (i = 0; i < sizeof(ctl_opthelp) / sizeof(ctl_opthelp[0]); i++)
		ctl_usage_line(f, ctl_opthelp[i].oh_usage,
		    ctl_opthelp[i].oh_help);
	ctl_usage_line(f, "-h, --help", "this help; after a command, its "
	    "own");
	ctl_usage_line(f, "-V, --version", "the version");
	fprintf(f, "\nacmectl COMMAND --help: the command's usage and "
	    "options\nexit status: 0 done, 1 error (on stderr), 2 bad "
	    "usage\n");
}

/* COMMAND --help: its usage line, what it does, the options it takes. */
static void
ctl_usage_cmd(FILE *f, const struct ctl_cmd *cmd)
{
	size_t	i;

	fprintf(f, "usage: acmectl [--json] [-s socket] %s%s\n%s\n\n"
	    "options:\n", cmd->c_name, cmd->c_args, cmd->c_help);
	ctl_usage_socket(f);
	for (i = 0; i < sizeof(ctl_opthelp) / sizeof(ctl_opthelp[0]); i++) {
		if (cmd->c_opts & ctl_opthelp[i].oh_bit)
			ctl_usage_line(f, ctl_opthelp[i].oh_usage,
			    ctl_opthelp[i].oh_help);
	}
}

static const struct ctl_cmd *
ctl_find(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++) {
		if (strcmp(ctl_cmds[i].c_name, name) == 0)
			return &ctl_cmds[i];
	}
	return NULL;
}

/* --timeout: whole seconds, 1 to a day. */
static int
ctl_parse_timeout(const char *s)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(s, &end, 10);
	if (!isdigit((unsigned char)*s) || *end != '\0' || errno != 0 ||
	    n < 1 || n > CTL_WAIT_MAX)
		return -1;
	return (int)n;
}

/* The command's arguments and options; 0 if they fit, else usage. */
static int
ctl_check_args(const struct ctl_cmd *cmd, const struct ctl_opts *o,
    int argc, char **argv)
{
	size_t	i;
	int	k;

	for (i = 0; i < sizeof(ctl_optnames) / sizeof(ctl_optnames[0]);
	    i++) {
		if ((o->o_given & ctl_optnames[i].co_bit) &&
		    !(cmd->c_opts & ctl_optnames[i].co_bit)) {
			fprintf(stderr, "acmectl: %s does not take %s\n",
			    cmd->c_name, ctl_optnames[i].co_name);
			return -1;
		}
	}
	if (argc < cmd->c_minargs ||
	    (cmd->c_maxargs != -1 && argc > cmd->c_maxargs))
		goto usage;
	/* renew takes one ID or --all, not both. */
	if ((cmd->c_opts & CTL_OPT_ALL) && o->o_all == (argc == 1))
		goto usage;
	for (k = 0; k < argc; k++) {
		if (argv[k][0] == '\0')
			goto usage;
	}
	if (cmd->c_run == ctl_cmd_account)
		return ctl_check_account(o, argv[0]);
	return 0;
usage:
	fprintf(stderr, "usage: acmectl [--json] [-s socket] %s%s\n",
	    cmd->c_name, cmd->c_args);
	return -1;
}

/* Options; -1 on a bad one (usage printed). */
static int
ctl_parse_opts(int argc, char **argv, struct ctl_opts *o, int *exitnow)
{
	static const struct option	 longopts[] = {
		{ "json",	no_argument,		NULL, 'j' },
		{ "all",	no_argument,		NULL, 'a' },
		{ "key",	required_argument,	NULL, 'k' },
		{ "reason",	required_argument,	NULL, 'r' },
		{ "no-wait",	no_argument,		NULL, 'n' },
		{ "timeout",	required_argument,	NULL, 't' },
		{ "profile",	required_argument,	NULL, 'p' },
		{ "challenge",	required_argument,	NULL, 'c' },
		{ "yes",	no_argument,		NULL, 'y' },
		{ "socket",	required_argument,	NULL, 's' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "version",	no_argument,		NULL, 'V' },
		{ NULL,		0,			NULL, 0 }
	};
	int				 ch;

	while ((ch = getopt_long(argc, argv, "hs:V", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			o->o_json = 1;
			o->o_given |= CTL_OPT_JSON;
			break;
		case 'a':
			o->o_all = 1;
			o->o_given |= CTL_OPT_ALL;
			break;
		case 'k':
			o->o_key = optarg;
			o->o_given |= CTL_OPT_KEY;
			break;
		case 'r':
			o->o_reason = optarg;
			o->o_given |= CTL_OPT_REASON;
			if (*optarg == '\0') {
				fprintf(stderr, "acmectl: --reason: empty\n");
				return -1;
			}
			break;
		case 'n':
			o->o_nowait = 1;
			o->o_given |= CTL_OPT_WAIT;
			break;
		case 't':
			o->o_given |= CTL_OPT_WAIT;
			if ((o->o_timeout = ctl_parse_timeout(optarg)) == -1) {
				fprintf(stderr, "acmectl: --timeout: \"%s\" is "
				    "not 1 to %d seconds\n", optarg,
				    CTL_WAIT_MAX);
				return -1;
			}
			break;
		case 'p':
			o->o_profile = optarg;
			o->o_given |= CTL_OPT_PROFILE;
			if (*optarg == '\0') {
				fprintf(stderr, "acmectl: --profile: empty\n");
				return -1;
			}
			break;
		case 'c':
			o->o_challenge = optarg;
			o->o_given |= CTL_OPT_CHALLENGE;
			if (*optarg == '\0') {
				fprintf(stderr, "acmectl: --challenge: "
				    "empty\n");
				return -1;
			}
			break;
		case 'y':
			o->o_yes = 1;
			o->o_given |= CTL_OPT_YES;
			break;
		case 's':
			o->o_socket = optarg;
			break;
		case 'h':
			/* After the command is known: its own, or the whole. */
			o->o_help = 1;
			break;
		case 'V':
			printf("acmectl %s\n", CTL_VERSION);
			*exitnow = 1;
			return 0;
		default:
			ctl_usage(stderr);
			return -1;
		}
	}
	return 0;
}

int
main(int argc, char *argv[])
{
	struct ctl_opts		 o;
	const struct ctl_cmd	*cmd;
	char			*cause = NULL;
	int			 exitnow = 0;

	memset(&o, 0, sizeof(o));
	o.o_timeout = CTL_WAIT_DEFAULT;
	if (ctl_parse_opts(argc, argv, &o, &exitnow) == -1)
		return CTL_EXIT_USAGE;
	if (exitnow)
		return 0;
	argc -= optind;
	argv += optind;
	if (o.o_help && argc == 0) {
		ctl_usage(stdout);
		return 0;
	}
	if (argc == 0) {
		ctl_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if ((cmd = ctl_find(argv[0])) == NULL) {
		fprintf(stderr, "acmectl: unknown command \"%s\"; acmectl -h "
		    "lists them\n", argv[0]);
		return CTL_EXIT_USAGE;
	}
	if (o.o_help) {
		ctl_usage_cmd(stdout, cmd);
		return 0;
	}
	if (ctl_check_args(cmd, &o, argc - 1, argv + 1) == -1)
		return CTL_EXIT_USAGE;

	if (o.o_socket == NULL)
		o.o_socket = getenv(CTL_SOCKET_ENV);
	if (o.o_socket == NULL || *o.o_socket == '\0')
		o.o_socket = CTL_DEFAULT_SOCKET;
	/* A daemon that closes early must give an error, not kill us. */
	signal(SIGPIPE, SIG_IGN);

	if (cmd->c_run(&o, argc - 1, argv + 1, &cause) == -1) {
		fflush(stdout);
		fprintf(stderr, "acmectl: %s\n", cause);
		free(cause);
		return 1;
	}
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "acmectl: stdout: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
