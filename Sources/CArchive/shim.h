#ifndef GANTRY_CARCHIVE_SHIM_H
#define GANTRY_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>

/* File type bits as constants Swift can import (the macros carry casts). */
static const unsigned int GANTRY_AE_IFMT = AE_IFMT;
static const unsigned int GANTRY_AE_IFREG = AE_IFREG;
static const unsigned int GANTRY_AE_IFLNK = AE_IFLNK;
static const unsigned int GANTRY_AE_IFSOCK = AE_IFSOCK;
static const unsigned int GANTRY_AE_IFCHR = AE_IFCHR;
static const unsigned int GANTRY_AE_IFBLK = AE_IFBLK;
static const unsigned int GANTRY_AE_IFDIR = AE_IFDIR;
static const unsigned int GANTRY_AE_IFIFO = AE_IFIFO;
#endif
