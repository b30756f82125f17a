# SslServerConfig.cmake -- installed by scripts/install.sh into
# <prefix>/lib/cmake/SslServer/ so that `find_package(SslServer)` works in
# config mode from CMAKE_PREFIX_PATH. It reuses the find module, restricted to
# the prefix this file was installed in (so it never picks up another copy).
# Honours SslServer_USE_STATIC_LIBS like the find module.

get_filename_component(_SslServer_CONFIG_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
include("${CMAKE_CURRENT_LIST_DIR}/FindSslServer.cmake")
unset(_SslServer_CONFIG_PREFIX)
