/* wdelta.c - the command-line tool: parses arguments and calls libwdelta.
 * No format logic lives here; see core/wdelta.h.  Each command is in
 * tools/cmd_*.c (cmds.h), their shared helpers in tools/cli.c.
 *
 *   wdelta create  --base DIR --finetuned DIR -o OUT.wdelta [options]
 *   wdelta inspect FILE [--json]
 *   wdelta apply   FILE --base DIR -o OUTDIR [--threads N]
 *   wdelta verify  FILE [--base DIR]
 *   wdelta hash    DIR
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"  /* usage_error, EXIT_USAGE */
#include "cmds.h" /* the commands */
#include "wdelta.h"

static const char main_help[] =
    "usage: wdelta COMMAND [ARGS]\n"
    "\n"
    "Store fine-tuned models as deltas (lossless or lossy) against their base model.\n"
    "\n"
    "commands:\n"
    "  create   --base DIR --finetuned DIR -o OUT.wdelta   make a delta\n"
    "  inspect  FILE [--json]                             describe a delta\n"
    "  apply    FILE --base DIR -o OUTDIR                 rebuild the fine-tune\n"
    "  verify   FILE [--base DIR] [--json]                check checksums / hashes\n"
    "  eval     FILE --base DIR --finetuned DIR [--json]  error and bits/param per tensor\n"
    "  inspect  --chain FILE...|DIR [--json]              describe a chain of deltas\n"
    "  rebase   FILE --base DIR -o OUT.wdelta             flatten a chain link\n"
    "  convert  IN.v1.wdelta --base DIR -o OUT.wdelta     deltatensors v1 -> version 2\n"
    "  hash     DIR [--json]                              content hash of a model\n"
    "  find-base FILE DIR... [--json]                     which DIR is FILE's base\n"
    "\n"
    "  chains: create --parent PARENT.wdelta makes a link; apply, verify and rebase\n"
    "  find a link's parents by content hash (--chain PATH, default: its directory)\n"
    "\n"
    "  wdelta COMMAND --help   help for one command\n"
    "  create, inspect, verify, eval, hash: --json prints one JSON object\n"
    "  (sizes in *_bytes, times in seconds; names that are not UTF-8 have\n"
    "  U+FFFD there and their exact bytes in KEY_hex)\n"
    "\n"
    "  wdelta --version        print the version and the format versions read/written\n"
    "\n"
    "exit status:\n"
    "  0  success\n"
    "  1  bad or corrupt data, or another failure (the message says which)\n"
    "  2  usage error: an unknown or malformed option or argument, or options\n"
    "     that do not go together (e.g. --density without --strategy sparse)\n"
    "  3  a needed input is missing or is the wrong one (no such file or\n"
    "     directory, a file where a directory is wanted, a wrong base)\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(main_help, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V") || !strcmp(cmd, "version")) {
        printf("wdelta %s\n", WD_VERSION_STRING);
        printf(".wdelta format: reads versions %u (deltatensors) to %u, writes version %u\n", WD_FORMAT_READ_MIN,
               WD_FORMAT_READ_MAX, WD_FORMAT_WRITTEN);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"create", cmd_create}, {"inspect", cmd_inspect}, {"apply", cmd_apply},
        {"verify", cmd_verify}, {"hash", cmd_hash}, {"eval", cmd_eval},
        {"rebase", cmd_rebase}, {"convert", cmd_convert}, {"find-base", cmd_find_base},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (!strcmp(cmd, cmds[i].name)) {
            int rc = cmds[i].fn(argc - 1, argv + 1);
            if (fflush(stdout) != 0 || ferror(stdout)) {
                if (rc == 0) {
                    fprintf(stderr, "wdelta: error writing to standard output: %s\n", strerror(errno));
                    rc = 1;
                }
            }
            return rc;
        }
    }
    if (cmd[0] == '-') return usage_error(NULL, "unknown option '%s'", cmd);
    return usage_error(NULL, "unknown command '%s'", cmd);
}
