# Debian 12's xsimd 8.1 exports its target with INTERFACE_LINK_LIBRARIES "xtl" (it was built
# with XSIMD_ENABLE_XTL_COMPLEX) but its config never finds xtl, so CMake links "-lxtl",
# which does not exist: every executable using xsimd fails to link. xtl is header-only and
# only needed with XSIMD_ENABLE_XTL_COMPLEX, which itscale never defines, so when no xtl
# target exists we drop the dangling name. Installed and run by itscaleConfig.cmake too.
function(itscale_fixup_xsimd)
  if(NOT TARGET xsimd OR TARGET xtl)
    return()
  endif()
  get_target_property(_libs xsimd INTERFACE_LINK_LIBRARIES)
  if(_libs AND "xtl" IN_LIST _libs)
    list(REMOVE_ITEM _libs xtl)
    set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "${_libs}")
  endif()
endfunction()
itscale_fixup_xsimd()
