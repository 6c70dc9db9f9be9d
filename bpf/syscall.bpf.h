/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Syscall plumbing: from an fd to its file and userfaultfd, arguments
 * saved at entry and taken at exit, and who gets tracked.
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

/* ---- syscalls: notify, resolve, register, mapping changes -------------- */

/* The file behind fd in the current task, or NULL. */
static __always_inline struct file *file_of_fd(__u32 fd)
{
	/* a BTF task pointer: the loads below are direct, not helper calls */
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file **fdarr = fdt->fd;
	struct file *f = NULL;

	if (fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fdarr[fd]);
	return f;
}

/* The userfaultfd_ctx behind fd in the current task, or 0 if fd is not a userfaultfd. */
static __always_inline __u64 uffd_ctx_of(__u32 fd)
{
	struct file *f = file_of_fd(fd);
	__u64 fops;

	if (!f)
		return 0;
	fops = (__u64)KCAST(f, struct file)->f_op;
	if (!uffd_fops) {
		char name[sizeof(UFFD_NAME)] = {};
		const unsigned char *dname = BPF_CORE_READ(f, f_path.dentry, d_name.name);
		const char want[] = UFFD_NAME;

		bpf_probe_read_kernel_str(name, sizeof(name), dname);
		for (int i = 0; i < (int)sizeof(want); i++)
			if (name[i] != want[i])
				return 0;
		uffd_fops = fops;
	} else if (fops != uffd_fops) {
		return 0;
	}
	return (__u64)KCAST(f, struct file)->private_data;
}

static __always_inline __u64 ctx_mm(__u64 ctx)
{
	return (__u64)KCAST(ctx, struct userfaultfd_ctx)->mm;
}

/*
 * Saves the syscall's arguments in the thread's slot (nr 0: none saved),
 * rewritten in place: a hash update and delete per syscall cost more than
 * the rest of these programs.
 */
static __always_inline struct fl_sc *sc_save(__u32 nr, const __u64 *args, int nargs)
{
	struct fl_thread *t = thread_get((__u32)bpf_get_current_pid_tgid());
	struct fl_sc *sc;

	if (!t)
		return NULL;
	sc = &t->sc;
	/* a read is timed at its exit (the notify) alone: a timestamp costs ~60 ns */
	sc->ts = nr == SC_READ ? 0 : bpf_ktime_get_ns();
	sc->nr = nr;
	sc->ctx = sc->mm = 0;
	sc->fd = 0;
	for (int i = 0; i < 6; i++)
		sc->args[i] = i < nargs ? args[i] : 0;
	for (int i = 0; i < 5; i++)
		sc->words[i] = 0;
	return sc;
}

/* Takes the saved entry of this thread if it belongs to syscall nr (NULL
 * if not); none is left saved. Returns the thread's slot. */
static __always_inline struct fl_sc *sc_take(__u32 nr, struct fl_sc *out)
{
	struct fl_thread *t = thread_of((__u32)bpf_get_current_pid_tgid());
	struct fl_sc *sc = t ? &t->sc : NULL;
	bool mine;

	if (!sc || !sc->nr)
		return NULL;
	mine = sc->nr == nr;
	if (mine)
		__builtin_memcpy(out, sc, sizeof(*out));
	sc->nr = 0;
	return mine ? sc : NULL;
}

static __always_inline bool current_tracked(void)
{
	return tracked(bpf_get_current_pid_tgid() >> 32);
}

static __always_inline void track_current(__u32 why)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (tgid != self_tgid)
		tracked_set(tgid, why);
}

/* May the current, untracked process start being tracked? */
static __always_inline bool may_track_new(void)
{
	struct task_struct *t;
	char comm[16];

	if (!track_new)
		return false;
	if (!track_comm[0])
		return true;
	t = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&comm, t, group_leader, comm);
	for (int i = 0; i < 16; i++) {
		if (comm[i] != track_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}
