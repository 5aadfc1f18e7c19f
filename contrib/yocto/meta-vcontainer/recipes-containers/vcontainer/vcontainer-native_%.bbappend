# Replaces the shell vrunner.sh that vcontainer-native installs (and that
# container-cross-install.bbclass calls as ${STAGING_BINDIR_NATIVE}/vrunner.sh) with
# vcontainer's, taken from a prebuilt install tree on the build host:
#
#   make install PREFIX=/opt/vcontainer            (in the vcontainer repository)
#   VCONTAINER_PREFIX = "/opt/vcontainer"          (in local.conf)
#
# The tree is copied whole (binary, plugins, guest blobs) because the binary finds its
# plugins and blobs relative to itself; vrunner.sh is a link to it, and the program name is
# what selects the batch import. Not built here (no bitbake on these machines).

VCONTAINER_PREFIX ??= ""
VCONTAINER_DEST = "${libdir}/vcontainer-rs"

do_install[vardeps] += "VCONTAINER_PREFIX"
do_install[file-checksums] += "${@'${VCONTAINER_PREFIX}/bin/vcontainer:True' if d.getVar('VCONTAINER_PREFIX') else ''}"

do_install:append() {
    if [ -z "${VCONTAINER_PREFIX}" ]; then
        bbfatal "meta-vcontainer: set VCONTAINER_PREFIX to a vcontainer install tree (make install PREFIX=...)"
    fi
    if [ ! -x "${VCONTAINER_PREFIX}/bin/vcontainer" ]; then
        bbfatal "meta-vcontainer: ${VCONTAINER_PREFIX}/bin/vcontainer not found"
    fi
    install -d ${D}${VCONTAINER_DEST}/bin ${D}${VCONTAINER_DEST}/lib/vcontainer/plugins
    install -m 0755 ${VCONTAINER_PREFIX}/bin/vcontainer ${D}${VCONTAINER_DEST}/bin/vcontainer
    install -m 0755 ${VCONTAINER_PREFIX}/lib/vcontainer/plugins/*.so ${D}${VCONTAINER_DEST}/lib/vcontainer/plugins/
    if [ -d ${VCONTAINER_PREFIX}/share/vcontainer/blobs ]; then
        install -d ${D}${VCONTAINER_DEST}/share/vcontainer
        cp -R --no-dereference --preserve=mode,links ${VCONTAINER_PREFIX}/share/vcontainer/blobs \
            ${D}${VCONTAINER_DEST}/share/vcontainer/
    fi
    install -d ${D}${bindir}
    rm -f ${D}${bindir}/vrunner.sh
    # relative (ln -r): the native sysroot is copied into each recipe-sysroot-native
    ln -sr ${D}${VCONTAINER_DEST}/bin/vcontainer ${D}${bindir}/vrunner.sh
}
