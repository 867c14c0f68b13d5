# Workaround for the ROS 2 wheels on PyPI (ros-jazzy-*): injected into the configure step
# with -DCMAKE_PROJECT_INCLUDE=<this file> (scripts/setup.sh does it); not needed, and
# harmless, with a normal ROS install.
#
# Why: the wheels were built in a manylinux container, and their exported
# `<pkg>__rosidl_generator_py` targets (std_msgs, builtin_interfaces, ...) still list the
# include directories of that machine (/opt/python/cpXY-cpXY/include/pythonX.Y and its
# numpy include dir). Our generated Python type support links those targets, and CMake's
# generate step then stops with "Imported target ... includes non-existent path".
#
# What: CMAKE_PROJECT_INCLUDE runs right after project(); from there we defer a call to the
# end of the top-level directory's configure (after every find_package has imported its
# targets) that drops non-existent absolute paths from INTERFACE_INCLUDE_DIRECTORIES of all
# imported targets. The real Python and numpy include dirs come from our own
# find_package(Python3 ... NumPy) through rosidl_generator_py, so nothing needed is lost.
# Upstream packages are left untouched on disk.

function(d3p_strip_missing_include_dirs)
  get_property(imported DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(target IN LISTS imported)
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    set(kept "")
    set(dropped "")
    foreach(dir IN LISTS dirs)
      # Generator expressions and relative entries are evaluated later: keep them.
      if(dir MATCHES "\\$<" OR NOT IS_ABSOLUTE "${dir}" OR EXISTS "${dir}")
        list(APPEND kept "${dir}")
      else()
        list(APPEND dropped "${dir}")
      endif()
    endforeach()
    if(dropped)
      set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${kept}")
      message(STATUS "d3p: dropped non-existent include dirs of ${target}: ${dropped}")
    endif()
  endforeach()
endfunction()

# Only once, for the top-level project (a nested project() would defer a second call).
if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  get_property(_d3p_deferred GLOBAL PROPERTY D3P_STRIP_INCLUDE_DIRS_DEFERRED)
  if(NOT _d3p_deferred)
    set_property(GLOBAL PROPERTY D3P_STRIP_INCLUDE_DIRS_DEFERRED TRUE)
    cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL d3p_strip_missing_include_dirs)
  endif()
endif()
