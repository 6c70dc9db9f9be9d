"""TLS credentials for the migration tests, in QEMU's layouts.

    make_psk(path, user="faultline")      keys.psk: one "user:hexkey" line
    make_x509(dir, server_ip, ...)        ca-cert.pem, server-cert.pem,
                                          server-key.pem, client-cert.pem,
                                          client-key.pem (tls-creds-x509)

Made with the openssl command line (Debian's openssl package); stdlib only.
"""
import os
import secrets
import subprocess


def make_psk(path, user="faultline", key_hex=None):
    with open(path, "w") as f:
        f.write(f"{user}:{key_hex or secrets.token_hex(32)}\n")
    os.chmod(path, 0o600)
    return path


def _ssl(*args, cwd):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"openssl {' '.join(args)}: {p.stderr}"


def _cert(d, name, cn, ca, ext, days=30, start=None):
    _ssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext)
    if start:
        # An already expired certificate (`openssl x509` can't backdate one:
        # `openssl ca` with an explicit validity can).
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca=c\n[c]\ndatabase=index.txt\nnew_certs_dir=.\n"
                    "serial=serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n")
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        _ssl("ca", "-batch", "-config", "ca.cnf", "-startdate", start, "-enddate", days,
             "-in", f"{name}.csr", "-out", f"{name}-cert.pem", "-keyfile", f"{ca}-key.pem",
             "-cert", f"{ca}-cert.pem", "-extfile", f"{name}.ext", "-notext", cwd=d)
        return
    _ssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}-cert.pem", "-CAkey", f"{ca}-key.pem",
         "-CAcreateserial", "-out", f"{name}-cert.pem", "-extfile", f"{name}.ext",
         "-days", str(days), cwd=d)


def make_x509(d, server_ip, *, client_cn="target-host", expired_client=False, ca_name="ca"):
    """A CA, a server certificate for server_ip (IP SAN) and a client
    certificate, all in directory d."""
    os.makedirs(d, exist_ok=True)
    _ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{ca_name}-key.pem", "-out", f"{ca_name}-cert.pem", "-days", "30",
         "-subj", f"/CN=faultline test CA {secrets.token_hex(4)}", cwd=d)
    if ca_name != "ca":
        os.replace(os.path.join(d, f"{ca_name}-cert.pem"), os.path.join(d, "ca-cert.pem"))
        os.replace(os.path.join(d, f"{ca_name}-key.pem"), os.path.join(d, "ca-key.pem"))
    _cert(d, "server", server_ip, "ca",
          f"subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth\n")
    if expired_client:
        _cert(d, "client", client_cn, "ca", "extendedKeyUsage=clientAuth\n",
              days="20200102000000Z", start="20200101000000Z")
    else:
        _cert(d, "client", client_cn, "ca", "extendedKeyUsage=clientAuth\n")
    for f in os.listdir(d):
        if f.endswith("-key.pem"):
            os.chmod(os.path.join(d, f), 0o600)
    return d
