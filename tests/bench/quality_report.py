"""quality_report.py TSV PNG NTOK: the lossy quality table (markdown, stdout)
and a PNG plot of the perplexity increase on eval-ft against bits/param.
The PNG is written with zlib + struct (no plotting library): x axis bits per
parameter (whole file), y axis perplexity increase in % on a log scale
(0.001% to 1000%; points at or below 0.001% sit on the bottom line); one colour per codec,
the legend is printed under the table."""
import sys, struct, zlib, math, csv

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
png, ntok = sys.argv[2], sys.argv[3]
ft = next(r for r in rows if r["name"] == "fine-tune")
ref = float(ft["ppl_ft"])
def inc(r): return (float(r["ppl_ft"]) / ref - 1) * 100
print(f"Perplexity of pairB rebuilt through a wdeltafs mount (first {ntok} tokens); "
      f"bits/param = whole .wdelta file * 8 / parameters (tensor blocks only in brackets).\n")
print("| codec | setting | bits/param | rel. error | ppl eval-ft | increase % | ppl eval-pre |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    bt = "" if r["bits_tensors"] in ("-", "16") else f" ({r['bits_tensors']})"
    print(f"| {r['codec']} | {r['setting']} | {float(r['bits_file']):.3f}{bt} | {r['rel_error']} | "
          f"{float(r['ppl_ft']):.5f} | {inc(r):+.3f} | {r['ppl_pre'] if r['ppl_pre'] == '-' else '%.5f' % float(r['ppl_pre'])} |")

COL = {"lossless": (0, 0, 0), "int4": (31, 119, 180), "sparse": (44, 160, 44), "bitdelta": (214, 39, 40),
       "axis1": (148, 103, 189), "auto": (255, 127, 14), "v1": (127, 127, 127)}
W, H, L, R, T, B = 720, 440, 60, 20, 20, 40
img = [[(255, 255, 255)] * W for _ in range(H)]
def px(x, y, c):
    if 0 <= x < W and 0 <= y < H: img[y][x] = c
def rect(x0, y0, x1, y1, c):
    for y in range(y0, y1 + 1):
        for x in range(x0, x1 + 1): px(x, y, c)
FONT = {"0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
        "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
        "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "%": "101001010100101",
        "-": "000000111000000"}
def text(x, y, s, c=(0, 0, 0)):
    for ch in s:
        g = FONT.get(ch)
        if g:
            for i, b in enumerate(g):
                if b == "1": rect(x + (i % 3) * 2, y + (i // 3) * 2, x + (i % 3) * 2 + 1, y + (i // 3) * 2 + 1, c)
        x += 8
xmax = max(10.0, max(float(r["bits_file"]) for r in rows if r["name"] != "fine-tune") * 1.05)
ylo, yhi = -3.0, 3.0  # log10 of percent: 0.001% .. 1000%
def X(b): return int(L + b / xmax * (W - L - R))
def Y(p): return int(H - B - (min(max(math.log10(max(p, 1e-3)), ylo), yhi) - ylo) / (yhi - ylo) * (H - T - B))
rect(L, T, L, H - B, (0, 0, 0)); rect(L, H - B, W - R, H - B, (0, 0, 0))
for e in range(int(ylo), int(yhi) + 1):
    y = Y(10 ** e)
    rect(L + 1, y, W - R, y, (225, 225, 225)); rect(L - 5, y, L, y, (0, 0, 0))
    text(4, y - 5, ("%g" % 10 ** e) + "%")
for b in range(0, int(xmax) + 1, 2):
    x = X(b)
    rect(x, H - B, x, H - B + 5, (0, 0, 0)); text(x - 4, H - B + 10, str(b))
for r in rows:
    if r["name"] == "fine-tune": continue
    c = COL.get(r["codec"].split()[0], (0, 0, 0))
    x, y = X(float(r["bits_file"])), Y(inc(r))
    rect(x - 4, y - 4, x + 4, y + 4, c)
# PNG
raw = b"".join(b"\x00" + bytes(v for p in row for v in p) for row in img)
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open(png, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0))
                      + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
print("\nPlot colours: " + ", ".join(f"{k} rgb{v}" for k, v in COL.items()) +
      "; x: bits/param (whole file), y: perplexity increase on eval-ft, % (log scale, 0.001% floor).")
