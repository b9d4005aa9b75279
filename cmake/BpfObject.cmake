# bpf_object(NAME SOURCE): compile a CO-RE BPF program with clang and generate
# its libbpf skeleton with bpftool. Creates an INTERFACE target NAME_skel whose
# include directory holds NAME.skel.h (struct NAME_bpf).
find_program(BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

# One object per target architecture, as libbpf-tools lay them out: the kernel's types from
# bpf/vmlinux/<arch>/vmlinux.h and libbpf's PT_REGS_* and BPF_KPROBE for that architecture.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(KIDREAPER_BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
  set(KIDREAPER_BPF_ARCH arm64)
else()
  message(FATAL_ERROR "kidreaper's BPF programs are built for x86_64 and aarch64, "
    "not ${CMAKE_SYSTEM_PROCESSOR}")
endif()
set(KIDREAPER_VMLINUX_DIR "${PROJECT_SOURCE_DIR}/bpf/vmlinux/${KIDREAPER_BPF_ARCH}"
    CACHE PATH "Directory holding the vmlinux.h the BPF programs build against")

function(bpf_object name source)
  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/bpf")
  set(object "${out_dir}/${name}.bpf.o")
  set(linked "${out_dir}/${name}.linked.bpf.o")
  set(skeleton "${out_dir}/${name}.skel.h")
  file(GLOB abi_headers "${PROJECT_SOURCE_DIR}/include/kidreaper/*.h")
  add_custom_command(
    OUTPUT "${object}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${out_dir}"
    COMMAND "${BPF_CLANG}" -g -O2 -target bpf -D__TARGET_ARCH_${KIDREAPER_BPF_ARCH}
            -Wall -Werror
            -I "${KIDREAPER_VMLINUX_DIR}" -I "${PROJECT_SOURCE_DIR}/include"
            -c "${source}" -o "${object}"
    DEPENDS "${source}" ${abi_headers}
    COMMENT "BPF ${name}.bpf.c"
    VERBATIM)
  add_custom_command(
    OUTPUT "${skeleton}"
    COMMAND "${BPFTOOL}" gen object "${linked}" "${object}"
    COMMAND "${BPFTOOL}" gen skeleton "${linked}" name "${name}_bpf" > "${skeleton}"
    DEPENDS "${object}"
    COMMENT "skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS "${skeleton}")
  add_library(${name}_skel INTERFACE)
  target_include_directories(${name}_skel SYSTEM INTERFACE "${out_dir}")
  add_dependencies(${name}_skel ${name}_skel_gen)
endfunction()
