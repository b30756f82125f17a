// qt_echo -- the Qt peer of the sslserver benchmarks: an event-driven TLS
// echo server on QSslServer (Qt 6.4+), one thread, one event loop.
//
//   qt_echo --cert CHAIN.pem --key KEY.pem [--port P] [--address A]
//           [--handshake-timeout MS] [--max-pending N] [--backlog N]
//
// --max-pending sets maxPendingConnections, which in QSslServer also bounds
// the handshakes in progress (Qt's default, 30, makes further clients wait
// in the kernel's backlog).
//
// Configured like the other servers: TLS 1.2 or later, no client
// certificate requested (VerifyNone), TCP_NODELAY (LowDelayOption) on
// accepted sockets; otherwise Qt's defaults (listen backlog 50, --backlog).
// Prints "listening on ADDR:PORT" once it accepts connections.

#include <QCoreApplication>
#include <QFile>
#include <QHostAddress>
#include <QSslCertificate>
#include <QSslConfiguration>
#include <QSslKey>
#include <QSslServer>
#include <QSslSocket>

#include <cstdio>
#include <cstdlib>
#include <cstring>

static void usage(const char *msg)
{
    std::fprintf(stderr,
                 "qt_echo: %s\nusage: qt_echo --cert CHAIN.pem --key KEY.pem [--port P] "
                 "[--address A] [--handshake-timeout MS] [--max-pending N] [--backlog N]\n",
                 msg);
    std::exit(2);
}

static QSslKey loadKey(const QString &path)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly))
        usage("cannot read the key file");
    const QByteArray pem = f.readAll();
    for (QSsl::KeyAlgorithm alg : {QSsl::Ec, QSsl::Rsa}) {
        QSslKey key(pem, alg, QSsl::Pem, QSsl::PrivateKey);
        if (!key.isNull())
            return key;
    }
    usage("the key is neither an EC nor an RSA private key");
    return {};
}

int main(int argc, char **argv)
{
    QCoreApplication app(argc, argv);
    QString address = QStringLiteral("127.0.0.1"), cert, key;
    quint16 port = 0;
    int handshakeTimeout = -2;
    int maxPending = 0;
    int backlog = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage("an option needs a value");
        const char *a = argv[i];
        const QString v = QString::fromLocal8Bit(argv[++i]);
        if (!std::strcmp(a, "--cert")) cert = v;
        else if (!std::strcmp(a, "--key")) key = v;
        else if (!std::strcmp(a, "--port")) port = quint16(v.toUInt());
        else if (!std::strcmp(a, "--address")) address = v;
        else if (!std::strcmp(a, "--handshake-timeout")) handshakeTimeout = v.toInt();
        else if (!std::strcmp(a, "--max-pending")) maxPending = v.toInt();
        else if (!std::strcmp(a, "--backlog")) backlog = v.toInt();
        else usage("unknown option");
    }
    if (cert.isEmpty() || key.isEmpty())
        usage("--cert and --key are required");
    if (!QSslSocket::supportsSsl())
        usage("Qt has no TLS backend (is the OpenSSL plugin installed?)");

    const QList<QSslCertificate> chain = QSslCertificate::fromPath(cert, QSsl::Pem);
    if (chain.isEmpty())
        usage("no certificate in the chain file");
    QSslConfiguration conf = QSslConfiguration::defaultConfiguration();
    conf.setLocalCertificateChain(chain);
    conf.setPrivateKey(loadKey(key));
    conf.setPeerVerifyMode(QSslSocket::VerifyNone);
    conf.setProtocol(QSsl::TlsV1_2OrLater);

    QSslServer server;
    server.setSslConfiguration(conf);
    if (handshakeTimeout != -2)
        server.setHandshakeTimeout(handshakeTimeout);
    if (maxPending > 0)
        server.setMaxPendingConnections(maxPending);
    if (backlog > 0)
        server.setListenBacklogSize(backlog);

    QObject::connect(&server, &QTcpServer::pendingConnectionAvailable, &server, [&server] {
        while (QTcpSocket *next = server.nextPendingConnection()) {
            auto *socket = static_cast<QSslSocket *>(next);
            socket->setSocketOption(QAbstractSocket::LowDelayOption, 1);
            QObject::connect(socket, &QIODevice::readyRead, socket,
                             [socket] { socket->write(socket->readAll()); });
            QObject::connect(socket, &QAbstractSocket::disconnected, socket,
                             &QObject::deleteLater);
            // The client closed (close_notify or TCP FIN) or failed: close
            // this side too. QSslSocket reports a close_notify as
            // RemoteHostClosedError and leaves the socket open otherwise.
            QObject::connect(socket, &QAbstractSocket::errorOccurred, socket,
                             [socket](QAbstractSocket::SocketError) {
                                 socket->disconnectFromHost();
                             });
            // Data that arrived with the handshake's last flight.
            if (socket->bytesAvailable() > 0)
                socket->write(socket->readAll());
        }
    });

    if (!server.listen(QHostAddress(address), port)) {
        std::fprintf(stderr, "qt_echo: listen: %s\n", qPrintable(server.errorString()));
        return 1;
    }
    std::printf("listening on %s:%u\n", qPrintable(address), unsigned(server.serverPort()));
    std::fflush(stdout);
    return app.exec();
}
