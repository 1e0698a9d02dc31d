"""Run a command inside a job's limits: `python -I -S enter_limits.py [--join FILE]... [--rlimit NAME=N]... -- ARGV`.

Where user code starts bare (no bubblewrap), the executor starts it through this, so that its first
process is in the job's cgroup (each --join names a cgroup.procs file) and under its rlimits before
it runs, and everything it starts inherits them: placing a process after it has started leaves out
whatever it forked meanwhile. (In bubblewrap no launcher is needed: bubblewrap's processes are
placed while its child waits on --block-fd.) It imports nothing beyond the standard library.
"""
import os
import sys


def main(args: list[str]) -> None:
    """Join the cgroups and set the rlimits named before "--", then become the command after it."""
    split = args.index("--")
    options, argv = args[:split], args[split + 1:]
    for option, value in zip(options[::2], options[1::2]):
        if option == "--join":
            descriptor = os.open(value, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                # "0" names the writing process itself, in cgroup v1 and v2 alike.
                os.write(descriptor, b"0")
            finally:
                os.close(descriptor)
        elif option == "--rlimit":
            import resource
            name, _, limit = value.partition("=")
            resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(limit), int(limit)))
        else:
            raise SystemExit(f"enter_limits: unknown option {option}")
    # Found on PATH as Popen would have found it, had it started the command itself.
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
