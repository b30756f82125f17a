# FindSslServer.cmake -- locate libsslserver (the C ABI of the `sslserver` crate).
#
# Works with two layouts:
#   * a cargo build tree: <root>/include/sslserver.h and
#     <root>/target/release/libsslserver.{so,a} (then <root>/target/debug/...);
#     $ENV{CARGO_TARGET_DIR} is searched as well;
#   * an installed prefix (scripts/install.sh): <prefix>/include/sslserver.h,
#     <prefix>/lib/libsslserver.{so,a}; the shared library's link chain
#     (libsslserver.so -> .so.0 -> .so.0.2.0) is followed to the versioned file.
#
# Hints (CMake or environment variables):
#   SslServer_ROOT            the repository root or an install prefix; also
#                             CMAKE_PREFIX_PATH is searched for installs.
#   SslServer_USE_STATIC_LIBS ON: link libsslserver.a (plus the system libraries
#                             a static Rust library needs). Default: the shared
#                             library, falling back to the static one if it is
#                             the only one found.
#   SslServer_CARGO_PROFILE   "release" or "debug": search only that cargo
#                             profile of a build tree (default: release first).
#
# Results:
#   SslServer::SslServer      imported target (use this)
#   SslServer_FOUND, SslServer_VERSION, SslServer_INCLUDE_DIRS,
#   SslServer_LIBRARIES       (the library plus its system dependencies)
#   SslServer_LIBRARY         the library file chosen
#
# Cache variables SslServer_INCLUDE_DIR, SslServer_SHARED_LIBRARY and
# SslServer_STATIC_LIBRARY may be set by hand to override the search.

cmake_policy(PUSH)
cmake_policy(VERSION 3.16...3.31)

# Search roots, most specific first. _SslServer_CONFIG_PREFIX is set by the
# installed SslServerConfig.cmake so that config mode only ever picks the
# install it was found in, never another copy on the system.
set(_SslServer_roots)
set(_SslServer_search_default_paths TRUE)
if(DEFINED _SslServer_CONFIG_PREFIX)
  list(APPEND _SslServer_roots "${_SslServer_CONFIG_PREFIX}")
  set(_SslServer_search_default_paths FALSE)
else()
  foreach(_SslServer_r IN ITEMS "${SslServer_ROOT}" "$ENV{SslServer_ROOT}")
    if(NOT _SslServer_r STREQUAL "")
      list(APPEND _SslServer_roots "${_SslServer_r}")
    endif()
  endforeach()
endif()

# Library directories: a build tree's target/<profile> and an install's lib/.
if(DEFINED SslServer_CARGO_PROFILE AND NOT SslServer_CARGO_PROFILE STREQUAL "")
  set(_SslServer_profiles "${SslServer_CARGO_PROFILE}")
else()
  set(_SslServer_profiles release debug)
endif()
set(_SslServer_lib_dirs)
foreach(_SslServer_r IN LISTS _SslServer_roots)
  foreach(_SslServer_p IN LISTS _SslServer_profiles)
    list(APPEND _SslServer_lib_dirs "${_SslServer_r}/target/${_SslServer_p}")
  endforeach()
  list(APPEND _SslServer_lib_dirs "${_SslServer_r}/lib")
endforeach()
if(NOT "$ENV{CARGO_TARGET_DIR}" STREQUAL "" AND _SslServer_search_default_paths)
  foreach(_SslServer_p IN LISTS _SslServer_profiles)
    list(APPEND _SslServer_lib_dirs "$ENV{CARGO_TARGET_DIR}/${_SslServer_p}")
  endforeach()
endif()

if(_SslServer_search_default_paths)
  set(_SslServer_default_paths)
else()
  set(_SslServer_default_paths NO_DEFAULT_PATH)
endif()

find_path(SslServer_INCLUDE_DIR
  NAMES sslserver.h
  HINTS ${_SslServer_roots}
  PATH_SUFFIXES include
  ${_SslServer_default_paths}
  DOC "Directory containing sslserver.h")

# Shared and static are separate cache entries so that flipping
# SslServer_USE_STATIC_LIBS in an existing build directory takes effect.
# find_library's NAMES are exact file names here: a plain "sslserver" would let
# CMAKE_FIND_LIBRARY_SUFFIXES pick either flavour.
find_library(SslServer_SHARED_LIBRARY
  NAMES libsslserver.so libsslserver.dylib
  HINTS ${_SslServer_lib_dirs}
  PATH_SUFFIXES lib
  ${_SslServer_default_paths}
  DOC "Path to the shared libsslserver")
find_library(SslServer_STATIC_LIBRARY
  NAMES libsslserver.a
  HINTS ${_SslServer_lib_dirs}
  PATH_SUFFIXES lib
  ${_SslServer_default_paths}
  DOC "Path to the static libsslserver")
mark_as_advanced(SslServer_INCLUDE_DIR SslServer_SHARED_LIBRARY SslServer_STATIC_LIBRARY)

if(SslServer_USE_STATIC_LIBS)
  set(SslServer_LIBRARY "${SslServer_STATIC_LIBRARY}")
  set(_SslServer_kind STATIC)
elseif(SslServer_SHARED_LIBRARY)
  # An install's libsslserver.so links to libsslserver.so.0, which links to the
  # versioned file (libsslserver.so.0.2.0): use that file, as CMake's own
  # exported targets do. In a build tree this is the library itself.
  get_filename_component(SslServer_LIBRARY "${SslServer_SHARED_LIBRARY}" REALPATH)
  set(_SslServer_kind SHARED)
else()
  set(SslServer_LIBRARY "${SslServer_STATIC_LIBRARY}")
  set(_SslServer_kind STATIC)
endif()

# Version: the header's `#define SSLSERVER_VERSION "x.y.z"`, else the pkg-config
# file of an install, else the Cargo.toml of a build tree.
unset(SslServer_VERSION)
if(SslServer_INCLUDE_DIR AND EXISTS "${SslServer_INCLUDE_DIR}/sslserver.h")
  file(STRINGS "${SslServer_INCLUDE_DIR}/sslserver.h" _SslServer_line
       REGEX "^#[ \t]*define[ \t]+SSLSERVER_VERSION(_STRING)?[ \t]+\"[^\"]*\"" LIMIT_COUNT 1)
  if(_SslServer_line MATCHES "\"([^\"]*)\"")
    set(SslServer_VERSION "${CMAKE_MATCH_1}")
  endif()
endif()
if(NOT SslServer_VERSION AND SslServer_LIBRARY)
  get_filename_component(_SslServer_libdir "${SslServer_LIBRARY}" DIRECTORY)
  if(EXISTS "${_SslServer_libdir}/pkgconfig/sslserver.pc")
    file(STRINGS "${_SslServer_libdir}/pkgconfig/sslserver.pc" _SslServer_line
         REGEX "^Version:" LIMIT_COUNT 1)
    if(_SslServer_line MATCHES "^Version:[ \t]*([^ \t]+)")
      set(SslServer_VERSION "${CMAKE_MATCH_1}")
    endif()
  endif()
endif()
if(NOT SslServer_VERSION AND SslServer_INCLUDE_DIR AND EXISTS "${SslServer_INCLUDE_DIR}/../Cargo.toml")
  # The first `version = "..."` is the [package] one in this crate's manifest.
  file(STRINGS "${SslServer_INCLUDE_DIR}/../Cargo.toml" _SslServer_line
       REGEX "^version[ \t]*=[ \t]*\"[^\"]*\"" LIMIT_COUNT 1)
  if(_SslServer_line MATCHES "\"([^\"]*)\"")
    set(SslServer_VERSION "${CMAKE_MATCH_1}")
  endif()
endif()

include(FindPackageHandleStandardArgs)
if(CMAKE_VERSION VERSION_LESS 3.19)
  set(_SslServer_range)
else()
  set(_SslServer_range HANDLE_VERSION_RANGE)
endif()
find_package_handle_standard_args(SslServer
  REQUIRED_VARS SslServer_LIBRARY SslServer_INCLUDE_DIR
  VERSION_VAR SslServer_VERSION
  ${_SslServer_range})

if(SslServer_FOUND)
  set(SslServer_INCLUDE_DIRS "${SslServer_INCLUDE_DIR}")
  set(_SslServer_deps)
  if(_SslServer_kind STREQUAL "STATIC")
    # A Rust staticlib bundles the Rust standard library, which needs these
    # (what `rustc --print native-static-libs` reports on glibc Linux).
    if(NOT TARGET Threads::Threads)
      find_package(Threads QUIET)
    endif()
    if(TARGET Threads::Threads)
      list(APPEND _SslServer_deps Threads::Threads)
    else()
      list(APPEND _SslServer_deps pthread)
    endif()
    list(APPEND _SslServer_deps ${CMAKE_DL_LIBS})
    if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
      list(APPEND _SslServer_deps m rt)
    elseif(APPLE)
      list(APPEND _SslServer_deps "-framework Security" "-framework CoreFoundation")
    endif()
  endif()
  set(SslServer_LIBRARIES "${SslServer_LIBRARY}" ${_SslServer_deps})

  if(NOT TARGET SslServer::SslServer)
    add_library(SslServer::SslServer ${_SslServer_kind} IMPORTED)
    set_target_properties(SslServer::SslServer PROPERTIES
      IMPORTED_LOCATION "${SslServer_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${SslServer_INCLUDE_DIR}")
    if(_SslServer_kind STREQUAL "STATIC")
      set_property(TARGET SslServer::SslServer PROPERTY IMPORTED_LINK_INTERFACE_LANGUAGES C)
    endif()
    if(_SslServer_deps)
      set_property(TARGET SslServer::SslServer PROPERTY
        INTERFACE_LINK_LIBRARIES ${_SslServer_deps})
    endif()
    if(_SslServer_kind STREQUAL "SHARED" AND NOT APPLE)
      # build.rs gives the library an SONAME. A library without one (an old
      # build) would have its absolute path recorded as DT_NEEDED when linked
      # by full path; IMPORTED_NO_SONAME makes CMake link with -L/-l instead.
      set(_SslServer_has_soname TRUE)
      if(CMAKE_READELF)
        set(_SslServer_readelf "${CMAKE_READELF}")
      else()
        find_program(_SslServer_readelf NAMES readelf)
      endif()
      if(_SslServer_readelf)
        execute_process(COMMAND "${_SslServer_readelf}" -d "${SslServer_LIBRARY}"
          OUTPUT_VARIABLE _SslServer_dyn ERROR_QUIET RESULT_VARIABLE _SslServer_rc)
        if(_SslServer_rc EQUAL 0)
          if(_SslServer_dyn MATCHES "Library soname: \\[([^\n]+)\\]")
            set(_SslServer_soname "${CMAKE_MATCH_1}")
            set_property(TARGET SslServer::SslServer PROPERTY IMPORTED_SONAME "${_SslServer_soname}")
            # A cargo build tree has only target/<profile>/libsslserver.so,
            # but programs ask the loader for the SONAME (libsslserver.so.0).
            # Give them a link by that name in this build directory, and
            # link through it so that the rpath points there.
            get_filename_component(_SslServer_libdir "${SslServer_LIBRARY}" DIRECTORY)
            if(NOT EXISTS "${_SslServer_libdir}/${_SslServer_soname}")
              set(_SslServer_link "${CMAKE_BINARY_DIR}/sslserver-soname/${_SslServer_soname}")
              file(MAKE_DIRECTORY "${CMAKE_BINARY_DIR}/sslserver-soname")
              file(CREATE_LINK "${SslServer_LIBRARY}" "${_SslServer_link}" SYMBOLIC)
              set_property(TARGET SslServer::SslServer PROPERTY IMPORTED_LOCATION "${_SslServer_link}")
            endif()
          else()
            set(_SslServer_has_soname FALSE)
          endif()
        endif()
      endif()
      if(NOT _SslServer_has_soname)
        set_property(TARGET SslServer::SslServer PROPERTY IMPORTED_NO_SONAME TRUE)
      endif()
    endif()
  endif()
endif()

foreach(_SslServer_v IN ITEMS roots search_default_paths profiles lib_dirs default_paths
        kind line libdir deps r p has_soname dyn rc range soname link)
  unset(_SslServer_${_SslServer_v})
endforeach()
unset(_SslServer_readelf CACHE)
unset(_SslServer_readelf)
cmake_policy(POP)
