# Cross build for arm64 with Debian's aarch64 toolchain (g++-aarch64-linux-gnu), used by
# `scripts/build --arch arm64`. The C library and libstdc++ are the toolchain's
# (/usr/aarch64-linux-gnu); every other library and header comes from KIDREAPER_SYSROOT, a
# directory holding Debian's arm64 -dev packages unpacked (scripts/build fills it). The BPF
# programs are still compiled by the host's clang (-target bpf) and bpftool.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

if(NOT KIDREAPER_SYSROOT AND DEFINED ENV{KIDREAPER_SYSROOT})
  set(KIDREAPER_SYSROOT "$ENV{KIDREAPER_SYSROOT}")
endif()
if(NOT KIDREAPER_SYSROOT OR NOT IS_DIRECTORY "${KIDREAPER_SYSROOT}/usr/lib/aarch64-linux-gnu")
  message(FATAL_ERROR "KIDREAPER_SYSROOT must name the arm64 packages' root "
    "(scripts/build --arch arm64 makes one), got '${KIDREAPER_SYSROOT}'")
endif()
# try_compile projects read this file again: hand them the sysroot too.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES KIDREAPER_SYSROOT)
set(ENV{KIDREAPER_SYSROOT} "${KIDREAPER_SYSROOT}")

set(CMAKE_FIND_ROOT_PATH "${KIDREAPER_SYSROOT}" /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # clang, bpftool, scdoc: the host's
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config reads the arm64 .pc files only and puts the sysroot in front of their paths.
set(ENV{PKG_CONFIG_LIBDIR}
    "${KIDREAPER_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${KIDREAPER_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${KIDREAPER_SYSROOT}")
set(ENV{PKG_CONFIG_PATH} "")
