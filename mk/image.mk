# The operator image, built without a container daemon (mmdebstrap + buildah, as root; both are
# installed from Debian's packages when missing). tools/image/build.sh caches the Debian base by
# recipe and skips the build when nothing it is made from changed (cold: about a minute).

export IDMSYNC_IMAGE_DIR ?= $(CURDIR)/build/image

.PHONY: image
image: venv ## build the operator image: build/image/idmsync-operator-<version>.oci.tar
	UV=$(UV) PYTHON=$(PY) IDMSYNC_CACHE=$(IDMSYNC_CACHE) tools/image/build.sh

TEST_PREREQS += image
