// SPDX-License-Identifier: Apache-2.0
//
// rawmount: call mount(2) directly, so that a regular file is mounted in the kernel's
// file-backed mode (util-linux mount(8) always puts a loop device in between).
//
//   rawmount SOURCE TARGET [FSTYPE [DATA]]      FSTYPE defaults to erofs; always MS_RDONLY
//
// Exit status: 0 on success, otherwise the errno of the failed mount(2) (ENOTBLK is 15,
// EINVAL 22), or 2 for a usage error, so a caller can tell "this kernel has no file-backed
// EROFS" from other failures without parsing text.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>

int main(int argc, char** argv) {
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s SOURCE TARGET [FSTYPE [DATA]]\n", argv[0]);
        return 2;
    }
    const char* fstype = argc > 3 ? argv[3] : "erofs";
    const char* data = argc > 4 ? argv[4] : NULL;
    if (mount(argv[1], argv[2], fstype, MS_RDONLY, data) != 0) {
        int err = errno;
        fprintf(stderr, "rawmount: mount(%s, %s, %s, MS_RDONLY, %s): %s (errno %d)\n", argv[1],
                argv[2], fstype, data ? data : "NULL", strerror(err), err);
        return err > 0 && err < 256 ? err : 1;
    }
    return 0;
}
