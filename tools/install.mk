# tools/install.mk - install, uninstall, the Debian package (included by the Makefile)
#
#   make install [PREFIX=/usr/local] [DESTDIR=]   programs, library, header,
#        pkg-config file, man pages, bash completion, systemd unit, Python package
#   make uninstall                                removes exactly what install wrote
#   make deb                                      build/wdeltafs_VERSION-1_ARCH.deb from a
#        staged `make install PREFIX=/usr DESTDIR=build/deb-root` (tools/debian/)
#   make test-deb                                 dpkg -i, use, dpkg -r (root; real system)

# The library as Debian ships libraries: libwdelta.so.N (the soname, N the ABI
# version), the file libwdelta.so.VERSION, the dev symlink libwdelta.so.
VERSION   := $(shell sed -n 's/^\#define WD_VERSION_STRING "\(.*\)"/\1/p' core/wdelta.h)
SOVERSION := 0
SONAME    := libwdelta.so.$(SOVERSION)
LIBDIR    ?= $(PREFIX)/lib
BINDIR    ?= $(PREFIX)/bin
INCDIR    ?= $(PREFIX)/include
MANDIR    ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
PCDIR     ?= $(LIBDIR)/pkgconfig
UNITDIR   ?= $(PREFIX)/lib/systemd/system

# The Python package goes where Debian's python3 looks: /usr/lib/python3/dist-packages
# for PREFIX=/usr (the package's), else PREFIX/lib/python3.X/dist-packages
# (/usr/local's); PYTHONDIR overrides.  It finds the library through _libpath.py.
PYVER     := $(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3)
PYTHONDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/python3/dist-packages,$(PREFIX)/lib/python$(PYVER)/dist-packages)
PY_FILES  := $(wildcard python/wdelta/*.py)

# What install writes; uninstall removes exactly these and the python package,
# then the directories it made if left empty (bin/, lib/, include/, share/man
# are the system's and stay).
INSTALLED_FILES := $(BINDIR)/wdelta $(BINDIR)/wdeltafs $(LIBDIR)/libwdelta.a $(LIBDIR)/libwdelta.so \
                   $(LIBDIR)/$(SONAME) $(LIBDIR)/libwdelta.so.$(VERSION) $(INCDIR)/wdelta.h \
                   $(PCDIR)/wdelta.pc $(UNITDIR)/wdeltafs@.service $(MANDIR)/man1/wdelta.1 \
                   $(MANDIR)/man8/wdeltafs.8 $(BASHCOMPDIR)/wdelta $(BASHCOMPDIR)/wdeltafs

.PHONY: install uninstall deb test-deb
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(PCDIR) \
	           $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PYTHONDIR)/wdelta $(DESTDIR)$(MANDIR)/man1 \
	           $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(BASHCOMPDIR)
	install -m 755 build/wdelta build/wdeltafs $(DESTDIR)$(BINDIR)/
	install -m 644 build/libwdelta.a $(DESTDIR)$(LIBDIR)/
	install -m 644 build/libwdelta.so $(DESTDIR)$(LIBDIR)/libwdelta.so.$(VERSION)
	ln -sf libwdelta.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libwdelta.so
	install -m 644 $(filter-out python/wdelta/_libpath.py,$(PY_FILES)) $(DESTDIR)$(PYTHONDIR)/wdelta/
	printf '# written by make install\nLIBRARY = %s\n' "'$(LIBDIR)/$(SONAME)'" \
	  >$(DESTDIR)$(PYTHONDIR)/wdelta/_libpath.py
	install -m 644 core/wdelta.h $(DESTDIR)$(INCDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCDIR@|$(INCDIR)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' tools/wdelta.pc.in >$(DESTDIR)$(PCDIR)/wdelta.pc
	chmod 644 $(DESTDIR)$(PCDIR)/wdelta.pc
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/wdeltafs@.service.in >$(DESTDIR)$(UNITDIR)/wdeltafs@.service
	chmod 644 $(DESTDIR)$(UNITDIR)/wdeltafs@.service
	install -m 644 tools/wdelta.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 tools/wdeltafs.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 tools/completion/wdelta tools/completion/wdeltafs $(DESTDIR)$(BASHCOMPDIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED_FILES))
	rm -rf $(DESTDIR)$(PYTHONDIR)/wdelta
	-rmdir $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/lib/systemd $(DESTDIR)$(PCDIR) \
	       $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(PREFIX)/share/bash-completion 2>/dev/null || true

# ---- the Debian package
# Staged with make install PREFIX=/usr; man pages and the changelog gzip -9n,
# the copyright file, DEBIAN/control with Depends: from the binaries' NEEDED
# libraries (tools/debian/mkdeb.sh), built with dpkg-deb --root-owner-group.
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)
# the library and wdelta.pc in Debian's multiarch directory (/usr/lib/x86_64-linux-gnu)
DEB_MULTIARCH := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || $(CC) -print-multiarch)
DEB_MAINTAINER ?= wdeltafs authors <wdeltafs@example.org>
DEB_FILE := build/wdeltafs_$(VERSION)-1_$(DEB_ARCH).deb
deb: all
	rm -rf build/deb-root
	$(MAKE) -s install PREFIX=/usr LIBDIR=/usr/lib/$(DEB_MULTIARCH) DESTDIR=$(CURDIR)/build/deb-root
	DEB_MAINTAINER="$(DEB_MAINTAINER)" bash tools/debian/mkdeb.sh build/deb-root $(VERSION)-1 $(DEB_ARCH) \
	  /usr/lib/$(DEB_MULTIARCH) $(DEB_FILE)

test-deb: deb
	bash tools/debian/test-deb.sh $(DEB_FILE)
