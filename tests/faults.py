"""Faults planted on purpose in a copy of a VOC data set (tests and benchmarks/bench_data_checks.py).

Every function changes one file in place and returns its path.
"""
import os
import re
import shutil


def copy_voc(dirname, dest):
    """A copy of the VOC directory ``dirname`` at ``dest`` (returned)."""
    shutil.copytree(dirname, dest)
    return str(dest)


def jpg(dirname, image_id):
    return os.path.join(dirname, "JPEGImages", image_id + ".jpg")


def xml(dirname, image_id):
    return os.path.join(dirname, "Annotations", image_id + ".xml")


def truncate(path, keep=0.6):
    """Cut the file off after ``keep`` of its bytes (an interrupted copy)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:int(len(data) * keep)])
    return path


def zero_bytes(path):
    open(path, "wb").close()
    return path


def html_page(path):
    """What a failed download leaves under the image's name."""
    with open(path, "w") as f:
        f.write("<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n")
    return path


def break_huffman(path):
    """Point every scan component at Huffman table 3, which no baseline JPEG defines: the
    header parses and the file still ends with FF D9, but decoding fails (only a full decode
    finds it)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    sos = data.index(b"\xff\xda")
    for c in range(data[sos + 4]):
        data[sos + 5 + 2 * c + 1] = 0x33
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


def _edit_xml(path, fn):
    with open(path) as f:
        text = f.read()
    new = fn(text)
    assert new != text, path
    with open(path, "w") as f:
        f.write(new)
    return path


def break_xml(path):
    return _edit_xml(path, lambda t: t[:len(t) // 2])


def set_size(path, width, height):
    def fn(t):
        t = re.sub(r"<width>\d+</width>", f"<width>{width}</width>", t, count=1)
        return re.sub(r"<height>\d+</height>", f"<height>{height}</height>", t, count=1)
    return _edit_xml(path, fn)


def set_first_class(path, name):
    return _edit_xml(path, lambda t: re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", t,
                                            count=1))


def set_first_box(path, xmin, ymin, xmax, ymax):
    def fn(t):
        for key, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            t = re.sub(rf"<{key}>[^<]*</{key}>", f"<{key}>{value}</{key}>", t, count=1)
        return t
    return _edit_xml(path, fn)


def split_ids(dirname, split):
    with open(os.path.join(dirname, "ImageSets", "Main", split + ".txt")) as f:
        return [line.strip() for line in f if line.strip()]


def write_split(dirname, split, lines):
    path = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return path
