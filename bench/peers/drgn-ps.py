# What `vmsight ps` lists, done by drgn (run by bench/peers/drgn.ts as
# `python3 -m drgn -q --qemu SOCKET -s VMLINUX drgn-ps.py`): for each process (a thread-group
# leader, as /proc and `vmsight ps` list them), pid, ppid, uid, state, comm and cmdline, turned
# into JSON as `vmsight ps --json` does. The JSON is not printed (the bench only counts it); the
# one line printed says how many processes and threads, and this process's CPU time and peak RSS.
import json
import resource

from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.sched import task_state_to_char

try:
    from drgn.helpers.linux.mm import cmdline
except ImportError:  # older drgn: no cmdline helper
    cmdline = None

rows = []
threads = 0
for task in for_each_task(prog):  # noqa: F821 (drgn's CLI defines prog)
    threads += 1
    if task.pid.value_() != task.tgid.value_():
        continue
    args = None
    if cmdline is not None:
        try:
            argv = cmdline(task)
            args = None if argv is None else [a.decode(errors="replace") for a in argv]
        except Exception:  # a swapped-out or vanished page: vmsight leaves it empty too
            args = None
    rows.append(
        {
            "pid": task.pid.value_(),
            "ppid": task.real_parent.tgid.value_(),
            "uid": task.cred.uid.val.value_(),
            "state": task_state_to_char(task),
            "comm": task.comm.string_().decode(errors="replace"),
            "cmdline": args,
        }
    )
text = json.dumps(rows)
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu_ms = round((usage.ru_utime + usage.ru_stime) * 1000)
print(f"drgn-ps tasks={len(rows)} threads={threads} bytes={len(text)} cpu_ms={cpu_ms} maxrss_kb={usage.ru_maxrss}")
