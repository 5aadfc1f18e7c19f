// Boot probe for the guest blobs (scripts/build-guest-smoke.sh): a static /init that does
// what the agent does before it serves -- load /etc/vcontainer/modules in order, mount
// /dev/vda (squashfs) under a tmpfs overlay, open an AF_VSOCK listener, find eth0 -- and
// reports each step on the console. With probe.runtime=docker|podman on the kernel command
// line it then chroots into the rootfs and checks the runtime starts with the image's
// configuration (docker info / podman info). Then it powers off. It checks the image, not
// the agent.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;

static double uptime(void) {
  struct timespec t;
  clock_gettime(CLOCK_BOOTTIME, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void check(int ok, const char *what, const char *detail) {
  printf("PROBE %s %s%s%s\n", ok ? "ok" : "FAIL", what, detail ? ": " : "", detail ? detail : "");
  if (!ok) failures++;
}

// reads a whole file, returns MB/s (0 when missing)
static double read_speed(const char *path, long *bytes) {
  struct timespec a, b;
  char buf[65536];
  int fd = open(path, O_RDONLY);
  *bytes = 0;
  if (fd < 0) return 0;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (ssize_t r; (r = read(fd, buf, sizeof buf)) > 0;) *bytes += r;
  clock_gettime(CLOCK_MONOTONIC, &b);
  close(fd);
  double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  return s > 0 ? *bytes / 1e6 / s : 0;
}

// The runtime smoke test, run as a shell inside the rootfs. Storage goes on a tmpfs as the
// agent does without a state disk (overlay2/overlay cannot sit on the root overlayfs).
static const char *docker_script =
    "containerd >/tmp/containerd.log 2>&1 &\n"
    "dockerd >/tmp/dockerd.log 2>&1 &\n"
    // dockerd needs 30-45 s under TCG on an idle host, minutes on a busy one
    "for i in $(seq 480); do docker info >/dev/null 2>&1 && break; sleep 0.5; done\n"
    "docker info --format 'PROBE docker-info driver={{.Driver}} cgroup={{.CgroupDriver}}' || "
    "{ grep -v level=info /tmp/dockerd.log | tail -20; exit 1; }\n"
    "docker info --format '{{.Driver}} {{.CgroupDriver}}' | grep -qx 'overlay2 cgroupfs'\n";
static const char *podman_script =
    "podman info --format 'PROBE podman-info driver={{.Store.GraphDriverName}} "
    "cgroup={{.Host.CgroupManager}} network={{.Host.NetworkBackend}}' || exit 1\n"
    "podman info --format '{{.Store.GraphDriverName}} {{.Host.CgroupManager}} "
    "{{.Host.NetworkBackend}}' | grep -qx 'overlay cgroupfs netavark'\n";

static void runtime_check(const char *runtime) {
  const char *script, *storage;
  if (strcmp(runtime, "docker") == 0) {
    script = docker_script;
    storage = "/var/lib/docker";
  } else if (strcmp(runtime, "podman") == 0) {
    script = podman_script;
    storage = "/var/lib/containers/storage";
  } else {
    check(0, "runtime", runtime);
    return;
  }
  // switch root like the agent: PID 1 itself must move into the rootfs, because the kernel
  // runs its module autoloader (/sbin/modprobe) with PID 1's root
  if (chdir("/newroot") != 0 || mount("/newroot", "/", NULL, MS_MOVE, NULL) != 0 ||
      chroot(".") != 0 || chdir("/") != 0) {
    check(0, "switch-root", strerror(errno));
    return;
  }
  mount("proc", "/proc", "proc", 0, 0);
  mount("sysfs", "/sys", "sysfs", 0, 0);
  mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
  mkdir("/dev/pts", 0755);
  mount("devpts", "/dev/pts", "devpts", 0, "ptmxmode=0666");
  mkdir("/dev/shm", 01777);
  mount("shm", "/dev/shm", "tmpfs", 0, "mode=1777");
  mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, 0);
  mount("tmpfs", "/run", "tmpfs", 0, 0);
  mount("tmpfs", "/tmp", "tmpfs", 0, 0);
  // like the agent: the storage mount point may not exist in the image
  char dir[256];
  snprintf(dir, sizeof dir, "%s", storage);
  for (char *p = dir + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      mkdir(dir, 0755);
      *p = '/';
    }
  mkdir(dir, 0711);
  check(mount("tmpfs", storage, "tmpfs", 0, 0) == 0, "storage-tmpfs", storage);
  pid_t pid = fork();
  if (pid == 0) {
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    setenv("HOME", "/root", 1);
    execl("/bin/sh", "sh", "-ec", script, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  char detail[64];
  snprintf(detail, sizeof detail, "%s exit %d", runtime, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "runtime-starts", detail);
}

int main(void) {
  mount("proc", "/proc", "proc", 0, 0);
  mount("sysfs", "/sys", "sysfs", 0, 0);
  mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
  printf("PROBE init-started uptime=%.2f\n", uptime());

  struct utsname u;
  uname(&u);
  FILE *list = fopen("/etc/vcontainer/modules", "r");
  check(list != NULL, "module-list", "/etc/vcontainer/modules");
  char line[512];
  int loaded = 0;
  while (list && fgets(line, sizeof line, list)) {
    line[strcspn(line, "\n")] = 0;
    if (!*line) continue;
    char path[1024];
    snprintf(path, sizeof path, "/lib/modules/%s/%s", u.release, line);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)) {
      check(0, "module", line);
      printf("PROBE   %s: %s\n", line, strerror(errno));
    } else {
      loaded++;
    }
    if (fd >= 0) close(fd);
  }
  printf("PROBE modules-loaded=%d uptime=%.2f\n", loaded, uptime());

  for (int i = 0; i < 250 && access("/dev/vda", F_OK) != 0; i++) usleep(20000);
  check(access("/dev/vda", F_OK) == 0, "disk", "/dev/vda");
  int rc = mount("/dev/vda", "/lower", "squashfs", MS_RDONLY, 0);
  check(rc == 0, "mount-squashfs", rc ? strerror(errno) : NULL);
  mount("tmpfs", "/upper", "tmpfs", 0, 0);
  mkdir("/upper/upper", 0755);
  mkdir("/upper/work", 0755);
  rc = mount("overlay", "/newroot", "overlay", 0,
             "lowerdir=/lower,upperdir=/upper/upper,workdir=/upper/work");
  check(rc == 0, "mount-overlay", rc ? strerror(errno) : NULL);
  printf("PROBE rootfs-mounted uptime=%.2f\n", uptime());

  char modpath[512];
  snprintf(modpath, sizeof modpath, "/newroot/lib/modules/%s/modules.dep", u.release);
  check(access(modpath, F_OK) == 0, "rootfs-module-tree", modpath);
  check(access("/newroot/boot", F_OK) != 0, "rootfs-without-boot", NULL);
  check(access("/newroot/sbin/e2fsck", X_OK) == 0, "rootfs-e2fsck", NULL);
  check(access("/newroot/etc/resolv.conf", F_OK) == 0, "rootfs-resolv.conf", NULL);

  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = 1024};
  rc = s < 0 ? -1 : bind(s, (struct sockaddr *)&addr, sizeof addr);
  check(rc == 0 && listen(s, 1) == 0, "vsock-listen", rc ? strerror(errno) : NULL);
  check(access("/sys/class/net/eth0", F_OK) == 0, "eth0", NULL);

  const char *bins[] = {"/newroot/usr/sbin/dockerd", "/newroot/usr/bin/podman"};
  for (unsigned i = 0; i < sizeof bins / sizeof *bins; i++) {
    long bytes;
    double mbs = read_speed(bins[i], &bytes);
    if (bytes) printf("PROBE read %s %ld bytes %.1f MB/s\n", bins[i] + 8, bytes, mbs);
  }
  char cmdline[4096] = "";
  int cfd = open("/proc/cmdline", O_RDONLY);
  if (cfd >= 0) {
    ssize_t n = read(cfd, cmdline, sizeof cmdline - 1);
    cmdline[n > 0 ? n : 0] = 0;
    close(cfd);
  }
  char *rt = strstr(cmdline, "probe.runtime=");
  if (rt) {
    rt += strlen("probe.runtime=");
    rt[strcspn(rt, " \n")] = 0;
    runtime_check(rt);
    printf("PROBE runtime-checked uptime=%.2f\n", uptime());
  }
  printf("PROBE RESULT %s failures=%d uptime=%.2f\n", failures ? "FAIL" : "PASS", failures, uptime());
  fflush(stdout);
  sync();
  reboot(RB_POWER_OFF);
  return 0;
}
