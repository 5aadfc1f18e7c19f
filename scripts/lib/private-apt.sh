# Sourced by scripts that download Debian packages of foreign arches (build-aarch64-probe.sh,
# fetch-test-busybox.sh): a private apt state under their cache dir (its own sources list,
# lists dir, status file and architecture list), so the host's dpkg architecture list and apt
# state are never touched, while apt still checks the Debian archive signatures.
#
#   private_apt APT_DIR MIRROR SUITE KEYRING "ARCH [ARCH...]"
#     writes APT_DIR/sources.list and sets the array apt_opts for apt-get/apt-cache calls
private_apt() {
  local apt_dir=$1 mirror=$2 suite=$3 keyring=$4 arches=$5
  local list=${arches// /,}
  mkdir -p "$apt_dir/sources.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb [arch=$list signed-by=$keyring] $mirror $suite main" >"$apt_dir/sources.list"
  : >"$apt_dir/status"
  apt_opts=(-o APT::Architecture="${arches%% *}" -o APT::Architectures::="$list"
            -o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts="$apt_dir/sources.d"
            -o Dir::State::Lists="$apt_dir/lists" -o Dir::State::status="$apt_dir/status"
            -o Dir::Cache="$apt_dir/cache" -o Dir::Cache::archives="$apt_dir/cache/archives"
            -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
            -o Acquire::Languages=none -o APT::Sandbox::User=root
            # the CI mirror may be a dated snapshot whose Release files are past Valid-Until
            -o Acquire::Check-Valid-Until=false)
}
