/* What the store's files share and nothing outside src/image needs. */
#pragma once

#include "manifest.h"

/* "blobs/sha256/" + 2 + "/" + 62 + NUL */
#define IMG_BLOB_RELPATH_BYTES 80

/* The blob's path relative to the store's root. */
void img_blob_relpath(const char *digest, char out[IMG_BLOB_RELPATH_BYTES]);
