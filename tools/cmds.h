/* cmds.h - the wdelta commands (tools/cmd_*.c), each called with the
 * command's own argc/argv (argv[0] is the command); the exit status. */
#ifndef WDELTA_TOOL_CMDS_H
#define WDELTA_TOOL_CMDS_H

int cmd_create(int argc, char **argv);  /* cmd_create.c */
int cmd_inspect(int argc, char **argv); /* cmd_inspect.c */
int cmd_apply(int argc, char **argv);   /* cmd_apply.c */
int cmd_verify(int argc, char **argv);  /* cmd_verify.c */
int cmd_eval(int argc, char **argv);    /* cmd_eval.c */
int cmd_hash(int argc, char **argv);    /* cmd_hash.c */
int cmd_find_base(int argc, char **argv); /* cmd_find_base.c */
int cmd_rebase(int argc, char **argv);  /* cmd_rebase.c */
int cmd_convert(int argc, char **argv); /* cmd_rebase.c */
/* cmd_chain.c: inspect --chain (called by cmd_inspect) */
int inspect_chain(int argc, char **argv, int json);
void inspect_chain_usage(void);

#endif
