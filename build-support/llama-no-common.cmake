# Included by CMake after each project() call while `make setup` builds llama-cpp-python (CMAKE_PROJECT_INCLUDE).
# llama-cpp-python forces llama.cpp's `common` library on, but its Python binding never loads it (its wheel ships
# libllama and libggml* only); turning it off again inside llama.cpp's own project skips about half the build.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp common library (unused by the Python binding)" FORCE)
